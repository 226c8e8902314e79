"""The consumer's measured traffic, published for routing under skew (streamer.routing).

Every `interval_s` the consumer sends a `TrafficReport` to the compacted `<prefix>.adapter-stats`
topic, keyed by its `served_by` name: its rate of answered requests in total and for its `top_n`
busiest adapters, taken from the `lorastream_requests` counter (whose labels are adapter ids the
engine resolved, so nothing unvalidated is published). On stop it sends a tombstone, so clients
forget it at once rather than when the report goes stale. Clients (LoraClient's RouteTable) sum
the reports into per-adapter traffic shares and spread the hot adapters over partitions.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Self

from consumers.metrics import UNRESOLVED_LABEL, Metrics
from streamer.config import TopicNames
from streamer.routing import MAX_REPORTED_ADAPTERS, TrafficReport, encode_report
from streamer.transport import Producer, Transport

log = logging.getLogger(__name__)

_SEND_TIMEOUT_S = 5.0
_UNSAFE = re.compile(r"[^A-Za-z0-9._:@-]")


@dataclass(frozen=True)
class TrafficStatsConfig:
    interval_s: float = 2.0  # how often a report goes out
    window_s: float = 20.0  # rates are measured over the last window_s (steadier than one interval)
    top_n: int = 64  # adapters per report, busiest first

    def __post_init__(self) -> None:
        if not 0 < self.interval_s <= 3600:
            raise ValueError("interval_s must be in (0, 3600]")
        if not self.interval_s <= self.window_s <= 86400:
            raise ValueError("window_s must be in [interval_s, 86400]")
        if not 1 <= self.top_n <= MAX_REPORTED_ADAPTERS:
            raise ValueError(f"top_n must be in [1, {MAX_REPORTED_ADAPTERS}]")


def answered_counts(metrics: Metrics) -> Callable[[], dict[str, float]]:
    """adapter label → requests answered so far, read from the service's `lorastream_requests`."""

    def counts() -> dict[str, float]:
        out: dict[str, float] = {}
        for family in metrics.requests.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    out[sample.labels["adapter"]] = sample.value
        return out

    return counts


class RateWindow:
    """Request rates over a sliding window of readings of cumulative counts (pure arithmetic)."""

    def __init__(self, counts: Callable[[], Mapping[str, float]], top_n: int, window_s: float) -> None:
        self._counts = counts
        self._top_n = top_n
        self._window_s = window_s
        self._readings: deque[tuple[float, Mapping[str, float]]] = deque()

    def rates(self, now_s: float) -> tuple[float, dict[str, float]] | None:
        """(total requests/s, the top_n adapters' requests/s) since the oldest reading within the
        window (the last one before it, when none is); None the first time."""
        current = dict(self._counts())
        while len(self._readings) > 1 and now_s - self._readings[1][0] >= self._window_s:
            self._readings.popleft()
        oldest = self._readings[0] if self._readings else None
        self._readings.append((now_s, current))
        if oldest is None or now_s <= oldest[0]:
            return None
        elapsed = now_s - oldest[0]
        deltas = {k: (v - oldest[1].get(k, 0.0)) / elapsed for k, v in current.items()}
        total = sum(d for d in deltas.values() if d > 0)
        busiest = sorted(
            ((k, d) for k, d in deltas.items() if d > 0 and k != UNRESOLVED_LABEL), key=lambda kd: (-kd[1], kd[0])
        )
        return total, dict(busiest[: self._top_n])


def consumer_key(served_by: str) -> str:
    """The record key and `consumer` field: served_by within the report's bounds."""
    return _UNSAFE.sub("_", served_by)[:128] or "consumer"


class TrafficStatsPublisher:
    """`async with` it around the service's run: reports every interval, a tombstone at the end."""

    def __init__(
        self,
        transport: Transport,
        topics: TopicNames,
        served_by: str,
        counts: Callable[[], Mapping[str, float]],
        config: TrafficStatsConfig = TrafficStatsConfig(),
        *,
        clock: Callable[[], float] = time.monotonic,
        lane: str | None = None,
    ) -> None:
        self._transport = transport
        self._topics = topics
        self._lane = lane  # the base's own request topic it reads, None: the default requests topic
        self.consumer = consumer_key(served_by)
        self.config = config
        self._window = RateWindow(counts, config.top_n, config.window_s)
        self._clock = clock
        self._producer: Producer | None = None
        self._task: asyncio.Task[None] | None = None
        self.num_partitions = 0
        self.num_sent = 0

    async def __aenter__(self) -> Self:
        async with self._transport.admin() as admin:
            self.num_partitions = len((await admin.describe_topic(self._lane or self._topics.requests)).get("partitions") or ())
        producer = self._transport.producer()
        await producer.start()
        self._producer = producer
        self._window.rates(self._clock())
        self._task = asyncio.create_task(self._run(), name="lorastream-traffic-stats")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._producer is not None:
            await self._send(None)  # forget me
            await self._producer.stop()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.config.interval_s)  # a timer: there is no event to wait on
            await self.publish_once()

    async def publish_once(self) -> None:
        measured = self._window.rates(self._clock())
        if measured is None or self.num_partitions < 1:
            return
        total, rates = measured
        report = TrafficReport(
            self.consumer, time.time_ns() // 1_000_000, self.num_partitions, total, rates, requests_topic=self._lane
        )
        await self._send(encode_report(report))

    async def _send(self, value: bytes | None) -> None:
        try:
            ack = await self._producer.send(self._topics.adapter_stats, value, key=self.consumer.encode())
            await asyncio.wait_for(ack, _SEND_TIMEOUT_S)
            self.num_sent += 1
        except Exception as exc:  # routing falls back to keys when stats are missing: never fatal
            log.warning("traffic stats not published to %s: %r", self._topics.adapter_stats, exc)


def publishing_traffic(service) -> TrafficStatsPublisher:
    """The publisher of an InferenceService (its transport, topics, served_by and metrics)."""
    lane = service.lane.topic if service.lane.topic != service.topics.requests else None
    return TrafficStatsPublisher(
        service.transport, service.topics, service.config.served_by, answered_counts(service.metrics), lane=lane
    )
