"""Routing under skew: which partition of the requests topic a request goes to.

Pure bookkeeping (no I/O): the measured traffic shares come in as `TrafficReport`s (the records of
the compacted `<prefix>.adapter-stats` topic, one per inference consumer), a `RoutePlan` comes out.
The rule, so that a producer in any language can follow it (docs/deploy.md, "Routing under skew"):

1. `key(a)` is the adapter id, `__base__` for the base model; `home(k) = (murmur2(k) & 0x7fffffff) % P`
   is Kafka's default partitioner over the P partitions of the requests topic.
2. From the fresh reports (sent within `max_report_age_ms`): `share(a) = Σ rate(a) / Σ total_rps`;
   P is the largest `num_partitions` reported. No fresh report: route every request by key.
3. Partition capacity `C = (1 + load_slack) / P`. An adapter is hot when `share(a) > hot_fraction · C`;
   every other adapter is cold and stays on `home(key(a))` — its cache affinity, and where a producer
   keying by adapter id alone sends it anyway.
4. Base load: `L[p] = Σ share of cold reported adapters with home p + (1 − Σ reported shares) / P`
   (Σ exact, as math.fsum). While some partition has `L[p] > C`, the one with the largest L
   (lowest index on ties) gives up its largest cold adapter (smallest key on ties), which becomes hot.
5. Hot adapters in decreasing share (ties: key ascending) fill partitions up to C: the remainder
   `r = share(a)` goes to the probes `home(key(a))`, `home(key(a) + "#1")`, `home(key(a) + "#2")`, …
   (a partition once), each taking `x = min(r, C − L[p])` when that room is at least `r` or at least
   `min_piece_fraction · C`; then `L[p] += x`, weight(a, p) = x. After 4·P probes the rest goes to
   the least loaded partition (lowest index on ties).
6. A request for a hot adapter picks among its partitions by `u = (murmur2(request_id) & 0x7fffffff)
   / 2^31`: the first partition, in placement order, whose cumulative weight ÷ share(a) exceeds u.
   A retried request lands where it went first; per-request ordering is all lorastream relies on.

Each requests topic is planned on its own: a report names the topic its consumer reads
(`requests_topic`; absent: the default `<prefix>.requests`), and a base's lane
(`<prefix>.requests.base.<name>`) is routed only from the reports of that lane's consumers.

Floating-point sums follow the order above; a producer that rounds differently may place a piece
elsewhere, which costs cache affinity, never correctness.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated

import msgspec
from aiokafka.partitioner import murmur2

from schemas.limits import ADAPTER_ID_PATTERN, TopicName

MAX_REPORTED_ADAPTERS = 1024  # per report: what a decoder accepts
MAX_PARTITIONS = 100_000
_ADAPTER_KEY = Annotated[str, msgspec.Meta(pattern=ADAPTER_ID_PATTERN)]  # __base__ included
_CONSUMER = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._:@-]{1,128}\Z")]
_RATE = Annotated[float, msgspec.Meta(ge=0.0, le=1e9)]


class TrafficReport(msgspec.Struct, frozen=True):
    """One consumer's measured request rates (the value of its record on the stats topic)."""

    consumer: _CONSUMER
    sent_ms: Annotated[int, msgspec.Meta(ge=0)]
    num_partitions: Annotated[int, msgspec.Meta(ge=1, le=MAX_PARTITIONS)]
    total_rps: _RATE  # every request it answered, reported adapters or not
    rates: Annotated[dict[_ADAPTER_KEY, _RATE], msgspec.Meta(max_length=MAX_REPORTED_ADAPTERS)]
    requests_topic: TopicName | None = None  # the topic it reads; None: the default requests topic


_DECODER = msgspec.json.Decoder(TrafficReport)


def decode_report(value: bytes) -> TrafficReport:
    """Raises msgspec.ValidationError / DecodeError for a record outside the bounds."""
    return _DECODER.decode(value)


def encode_report(report: TrafficReport) -> bytes:
    return msgspec.json.encode(report)


@dataclass(frozen=True)
class RoutingConfig:
    load_slack: float = 0.1  # partition capacity C = (1 + load_slack) / P
    hot_fraction: float = 0.5  # hot when share > hot_fraction · C
    min_piece_fraction: float = 0.1  # smallest piece of a hot adapter placed on a partition, × C
    max_report_age_ms: int = 30_000  # older reports are a consumer that went away

    def __post_init__(self) -> None:
        if not 0 < self.load_slack <= 10:
            raise ValueError("load_slack must be in (0, 10]")
        if not 0 < self.hot_fraction <= 1:
            raise ValueError("hot_fraction must be in (0, 1]")
        if not 0 <= self.min_piece_fraction < 1:
            raise ValueError("min_piece_fraction must be in [0, 1)")
        if self.max_report_age_ms < 1:
            raise ValueError("max_report_age_ms must be >= 1")


def home_partition(key: str, num_partitions: int) -> int:
    """Kafka's default partitioner (murmur2, as the Java client) for a string key."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % num_partitions


def _unit(request_id: str) -> float:
    return (murmur2(request_id.encode()) & 0x7FFFFFFF) / 2**31


@dataclass(frozen=True)
class RoutePlan:
    """Where each hot adapter's traffic goes: key → ((partition, weight), ...) in placement order."""

    num_partitions: int
    spread: Mapping[str, tuple[tuple[int, float], ...]] = field(default_factory=dict)

    def partition_for(self, key: str, request_id: str) -> int:
        pieces = self.spread.get(key)
        if not pieces:
            return home_partition(key, self.num_partitions)
        total = sum(w for _, w in pieces)
        u, cumulative = _unit(request_id), 0.0
        for partition, weight in pieces:
            cumulative += weight
            if cumulative / total > u:
                return partition
        return pieces[-1][0]


def plan_routes(shares: Mapping[str, float], num_partitions: int, config: RoutingConfig = RoutingConfig()) -> RoutePlan:
    """Steps 3-5 of the rule: `shares` (key → share of all requests) to a plan over P partitions."""
    if num_partitions < 1:
        raise ValueError("num_partitions must be >= 1")
    p_count = num_partitions
    capacity = (1.0 + config.load_slack) / p_count
    hot_share = config.hot_fraction * capacity
    tail = max(0.0, 1.0 - math.fsum(shares.values())) / p_count
    load = [tail] * p_count
    hot: list[tuple[str, float]] = []
    cold: list[list[tuple[float, str]]] = [[] for _ in range(p_count)]
    for key in sorted(shares):
        share = shares[key]
        if share > hot_share:
            hot.append((key, share))
        else:
            home = home_partition(key, p_count)
            load[home] += share
            cold[home].append((share, key))
    while True:
        over = max(range(p_count), key=lambda p: (load[p], -p))
        if load[over] <= capacity or not cold[over]:
            break
        share, key = min(cold[over], key=lambda item: (-item[0], item[1]))
        cold[over].remove((share, key))
        load[over] -= share
        hot.append((key, share))
    hot.sort(key=lambda item: (-item[1], item[0]))
    min_piece = config.min_piece_fraction * capacity
    spread: dict[str, tuple[tuple[int, float], ...]] = {}
    for key, share in hot:
        remaining, pieces, used = share, [], set()
        for i in range(4 * p_count):
            if remaining <= 0.0:
                break
            partition = home_partition(key if i == 0 else f"{key}#{i}", p_count)
            if partition in used:
                continue
            room = capacity - load[partition]
            if room >= remaining or room >= min_piece:
                piece = min(remaining, room)
                load[partition] += piece
                remaining -= piece
                pieces.append((partition, piece))
                used.add(partition)
        if remaining > 0.0:
            partition = min(range(p_count), key=lambda p: (load[p], p))
            load[partition] += remaining
            pieces.append((partition, remaining))
        spread[key] = tuple(pieces)
    return RoutePlan(p_count, spread)


def merge_shares(reports: Iterable[TrafficReport]) -> tuple[dict[str, float], int]:
    """Step 2: (key → share of all requests, P) from the fresh reports; ({}, 0) when none has traffic."""
    reports = list(reports)
    total = sum(r.total_rps for r in reports)
    if not reports or total <= 0.0 or not math.isfinite(total):
        return {}, 0
    rates: dict[str, float] = {}
    for report in reports:
        for key, rate in report.rates.items():
            rates[key] = rates.get(key, 0.0) + rate
    return {k: min(1.0, v / total) for k, v in rates.items()}, max(r.num_partitions for r in reports)


class RouteTable:
    """The latest report of each consumer, and per requests topic the plan made from the fresh
    reports of its consumers (rebuilt at most once per `rebuild_ms`). `apply` takes the stats
    topic's records; `partition_for` answers a send (topic None: the default requests topic)."""

    def __init__(self, config: RoutingConfig = RoutingConfig(), *, rebuild_ms: int = 1000) -> None:
        self.config = config
        self._rebuild_ms = rebuild_ms
        self._reports: dict[str, TrafficReport] = {}
        self._plans: dict[str | None, RoutePlan] = {}
        self._built_ms: int | None = None
        self.num_rejected = 0

    @property
    def num_reports(self) -> int:
        return len(self._reports)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """A record of the stats topic: a report, or a tombstone (value None) of a consumer that stopped."""
        if value is None:
            if key is not None:
                self._reports.pop(key.decode(errors="replace"), None)
                self._built_ms = None
            return
        try:
            report = decode_report(value)
        except (msgspec.ValidationError, msgspec.DecodeError):
            self.num_rejected += 1
            raise
        self._reports[report.consumer] = report
        self._built_ms = None

    def plan(self, now_ms: int, topic: str | None = None) -> RoutePlan | None:
        """The plan of one requests topic (None: the default one), or None when it has no fresh stats."""
        if self._built_ms is None or now_ms - self._built_ms >= self._rebuild_ms:
            # stale reports are consumers gone without a tombstone (a crash): forgotten, so the table
            # holds only live consumers however many names the compacted topic has seen
            self._reports = {
                c: r for c, r in self._reports.items() if now_ms - r.sent_ms <= self.config.max_report_age_ms
            }
            by_topic: dict[str | None, list[TrafficReport]] = {}
            for report in self._reports.values():
                by_topic.setdefault(report.requests_topic, []).append(report)
            self._plans = {}
            for lane, reports in by_topic.items():
                shares, num_partitions = merge_shares(reports)
                if num_partitions:
                    self._plans[lane] = plan_routes(shares, num_partitions, self.config)
            self._built_ms = now_ms
        return self._plans.get(topic)

    def partition_for(self, key: str, request_id: str, now_ms: int, topic: str | None = None) -> int | None:
        """The partition for a request to `topic` (None: the default requests topic), or None: send
        it keyed (no fresh stats of that topic's consumers, or a cold adapter)."""
        plan = self.plan(now_ms, topic)
        if plan is None or key not in plan.spread:
            return None
        return plan.partition_for(key, request_id)
