"""What can be asked for: the served bases and the registered adapters, live or not.

The bases come from the catalogue (streamer.catalogue: what inference consumers announce) and
from the adapters registry (`AdapterEvent.base_model`, the compacted adapters topic, read here
once to its end). An adapter is live when a live consumer serves its base (an adapter naming no
base: a live consumer of the default requests topic); its tier is the best one a live consumer
of its base announced (None: unknown, e.g. still only in the store). Used by
`LoraClient.models()` / `adapters()` and `lorastream ls`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from schemas import AdapterEvent, InvalidEvent, decode_adapter_event
from streamer.catalogue import BaseListing, Catalogue, Tier
from streamer.follower import TopicFollower
from streamer.transport import Transport

log = logging.getLogger(__name__)

MAX_LISTED_ADAPTERS = 100_000  # ids a listing holds; the rest of a flooded registry is left out
REGISTRY_READ_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class AdapterListing:
    adapter_id: str
    version: int
    base: str | None  # the base it was trained for (None: not said; the default base)
    is_live: bool
    tier: Tier | None


class RegistryReader(TopicFollower):
    """Reads the adapters topic to its end: adapter_id → its latest (not deleted) AdapterEvent."""

    name = "lorastream-registry-reader"

    def __init__(self, transport: Transport, topic: str, max_adapters: int = MAX_LISTED_ADAPTERS) -> None:
        super().__init__(transport, topic, from_beginning=True)
        self.events: dict[str, AdapterEvent] = {}
        self._max_adapters = max_adapters
        self.num_rejected = 0

    def on_record(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        if value is None:
            if key is not None:
                self.events.pop(key.decode(errors="replace"), None)
            return
        try:
            event = decode_adapter_event(value)
        except InvalidEvent:
            self.num_rejected += 1
            return
        if key is not None and key != event.adapter_id.encode():
            self.num_rejected += 1
            return
        if event.deleted:
            self.events.pop(event.adapter_id, None)
        elif event.adapter_id in self.events or len(self.events) < self._max_adapters:
            self.events[event.adapter_id] = event


async def read_registry(transport: Transport, topic: str, timeout_s: float = REGISTRY_READ_TIMEOUT_S) -> list[AdapterEvent]:
    """Every registered adapter's latest event, read to the topic's end (TimeoutError past `timeout_s`)."""
    reader = RegistryReader(transport, topic)
    await reader.start()
    try:
        await asyncio.wait_for(reader.caught_up.wait(), timeout_s)
    finally:
        await reader.stop()
    return list(reader.events.values())


def list_bases(catalogue: Catalogue, registry: list[AdapterEvent], now_ms: int) -> list[BaseListing]:
    """Every base a consumer announced or an adapter names, by name."""
    named = {event.base_model for event in registry if event.base_model is not None}
    return catalogue.bases(now_ms, also=named)


def list_adapters(
    catalogue: Catalogue, registry: list[AdapterEvent], default_topic: str, now_ms: int, base: str | None = None
) -> list[AdapterListing]:
    """The registered adapters (of `base`, when given), by id."""
    live_bases = {entry.base for entry in catalogue.live(now_ms)}
    default_live = any(entry.requests_topic == default_topic for entry in catalogue.live(now_ms))
    out = []
    for event in sorted(registry, key=lambda e: e.adapter_id):
        if base is not None and event.base_model != base:
            continue
        is_live = default_live if event.base_model is None else event.base_model in live_bases
        tier = catalogue.tier(event.base_model, event.adapter_id, now_ms)
        out.append(AdapterListing(event.adapter_id, event.version, event.base_model, is_live, tier))
    return out
