"""The catalogue: which base models are served, where, and which adapters each holds in memory.

Every inference consumer announces what it serves on the compacted `<prefix>.catalogue` topic,
keyed by its consumer name: a `ServedBase` every `interval_s` (a heartbeat: its `sent_ms` says it
is alive) and a tombstone when it stops cleanly. A separate topic, not more fields on the
adapter-stats reports (streamer.routing): those are read by every client on every send for
routing and change with traffic; a catalogue entry changes when a consumer starts or stops, is
read to choose a lane and to list models, and is written by a different ACL'd role if one day the
announcements are made by an operator tool instead.

`Catalogue` is pure bookkeeping (no I/O): `apply` takes the topic's records, `lanes(base)` answers
which request topics a live consumer of a base reads, `bases()` lists every base announced (live
or not). An entry is live while its last announcement is at most `max_age_ms` old (a crashed
consumer sends no tombstone; its entry goes stale as a routing report does). Every field is
bounded where it is decoded, and the table holds at most `max_entries` consumers (the oldest
announcements are forgotten first), so a flood of names on the topic cannot grow a client.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated

import msgspec

from schemas.limits import AdapterId, BaseModelName, EpochMs, MAX_NAME_CHARS, TopicName

MAX_ANNOUNCED_ADAPTERS = 1024  # adapters with a tier in one announcement
MAX_MODEL_LEN = 2**31 - 1
MAX_CATALOGUE_ENTRIES = 4096  # consumers a client remembers
DEFAULT_MAX_AGE_MS = 30_000  # as the routing table's reports (streamer.routing.RoutingConfig)

ConsumerName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._:@-]{1,128}\Z")]
GroupId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._:@-]{1,249}\Z")]
Label = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._/+-]{1,64}\Z")]  # an architecture, a quantization
EngineVersion = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_CHARS)]


class Tier(str, enum.Enum):
    """Where an adapter's weights are on the announcing consumer."""

    DEVICE = "device"  # in the accelerator's adapter slots: served with no load
    HOST = "host"  # in host memory: one copy to the device away


class ServedBase(msgspec.Struct, frozen=True, kw_only=True):
    """One consumer's announcement (the value of its record on the catalogue topic)."""

    consumer: ConsumerName  # its served_by name, made topic-key safe; also the record key
    base: BaseModelName
    architecture: Label | None = None  # the model family (llama, qwen2, ...)
    quantization: Label | None = None  # None: the weights as stored (bf16/fp16/fp32)
    max_model_len: Annotated[int, msgspec.Meta(ge=0, le=MAX_MODEL_LEN)] = 0  # tokens; 0: not told
    requests_topic: TopicName  # the topic it reads its requests from
    group_id: GroupId  # the consumer group it reads them in
    engine_version: EngineVersion
    sent_ms: EpochMs  # the consumer's clock when it announced
    adapter_tiers: Annotated[dict[AdapterId, Tier], msgspec.Meta(max_length=MAX_ANNOUNCED_ADAPTERS)] = {}


_DECODER = msgspec.json.Decoder(ServedBase)


def decode_served_base(value: bytes) -> ServedBase:
    """Raises msgspec.ValidationError / DecodeError for a record outside the bounds."""
    return _DECODER.decode(value)


def encode_served_base(entry: ServedBase) -> bytes:
    return msgspec.json.encode(entry)


@dataclass(frozen=True)
class BaseListing:
    """One base as the catalogue knows it: live when some consumer announced it recently."""

    base: str
    is_live: bool
    consumers: tuple[ServedBase, ...]  # its consumers' latest announcements, live ones first


class Catalogue:
    """The latest announcement of each consumer."""

    def __init__(self, *, max_age_ms: int = DEFAULT_MAX_AGE_MS, max_entries: int = MAX_CATALOGUE_ENTRIES) -> None:
        if max_age_ms < 1:
            raise ValueError("max_age_ms must be >= 1")
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_age_ms = max_age_ms
        self.max_entries = max_entries
        self._entries: dict[str, ServedBase] = {}
        self.num_rejected = 0

    @property
    def num_entries(self) -> int:
        return len(self._entries)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """A record of the catalogue topic: an announcement, or a tombstone of a consumer that stopped.

        An announcement whose key is not its consumer is refused (compaction would keep both)."""
        if value is None:
            if key is not None:
                self._entries.pop(key.decode(errors="replace"), None)
            return
        try:
            entry = decode_served_base(value)
        except (msgspec.ValidationError, msgspec.DecodeError):
            self.num_rejected += 1
            raise
        if key is not None and key != entry.consumer.encode():
            self.num_rejected += 1
            raise ValueError(f"catalogue record keyed {key!r} announces consumer {entry.consumer!r}")
        self._entries.pop(entry.consumer, None)  # re-inserted last: the dict stays in arrival order
        self._entries[entry.consumer] = entry
        while len(self._entries) > self.max_entries:
            oldest = min(self._entries.values(), key=lambda e: e.sent_ms)
            del self._entries[oldest.consumer]

    def is_live(self, entry: ServedBase, now_ms: int) -> bool:
        """Announced within `max_age_ms` of now (either way: a clock far ahead does not keep it live)."""
        return abs(now_ms - entry.sent_ms) <= self.max_age_ms

    def live(self, now_ms: int) -> list[ServedBase]:
        return [e for e in self._entries.values() if self.is_live(e, now_ms)]

    def lanes(self, base: str, now_ms: int) -> list[str]:
        """The request topics live consumers of `base` read, most consumers first (ties: by name)."""
        counts: dict[str, int] = {}
        for entry in self.live(now_ms):
            if entry.base == base:
                counts[entry.requests_topic] = counts.get(entry.requests_topic, 0) + 1
        return sorted(counts, key=lambda topic: (-counts[topic], topic))

    def bases(self, now_ms: int, also: Iterable[str] = ()) -> list[BaseListing]:
        """Every announced base and every name in `also` (e.g. the adapters registry's bases), by name."""
        by_base: dict[str, list[ServedBase]] = {name: [] for name in also}
        for entry in self._entries.values():
            by_base.setdefault(entry.base, []).append(entry)
        listings = []
        for base in sorted(by_base):
            entries = sorted(by_base[base], key=lambda e: (not self.is_live(e, now_ms), e.consumer))
            is_live = any(self.is_live(e, now_ms) for e in entries)
            listings.append(BaseListing(base, is_live, tuple(entries)))
        return listings

    def tier(self, base: str | None, adapter_id: str, now_ms: int) -> Tier | None:
        """The best tier any live consumer (of `base`, when given) holds the adapter in; None: unknown."""
        tiers = {
            e.adapter_tiers[adapter_id]
            for e in self.live(now_ms)
            if adapter_id in e.adapter_tiers and (base is None or e.base == base)
        }
        for tier in Tier:
            if tier in tiers:
                return tier
        return None
