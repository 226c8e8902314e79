"""The adapters-topic follower on the in-memory bus: applied versions, and refused locations skipped."""

from __future__ import annotations

import asyncio
import logging

from consumers.inference.adapters_topic import AdaptersTopicFollower
from gpu_engine.errors import AdapterPathRefusedError
from schemas import AdapterEvent, encode
from streamer.transport.memory import MemoryTransport


class Sink:
    def __init__(self) -> None:
        self.registered: list[tuple[str, int]] = []

    def register_adapter(self, ref) -> None:
        if ref.uri and "outside" in ref.uri:
            raise AdapterPathRefusedError(f"{ref.uri} is outside the adapter roots")
        self.registered.append((ref.adapter_id, ref.version))

    def retire_adapter(self, adapter_id: str) -> None:
        self.registered.append((adapter_id, -1))


async def test_a_refused_location_is_logged_with_its_code_and_skipped(caplog):
    bus = MemoryTransport()
    bus.create_topic("adapters", 2)
    producer = bus.producer()
    await producer.start()
    for event in (
        AdapterEvent("acme/good", 1, "file:///adapters/acme/good"),
        AdapterEvent("acme/evil", 1, "file:///outside/evil"),
        AdapterEvent("acme/good", 2, "file:///adapters/acme/good-v2"),
    ):
        await producer.send("adapters", encode(event), key=event.adapter_id.encode())
    sink = Sink()
    listener = AdaptersTopicFollower(bus, "adapters", sink)
    with caplog.at_level(logging.WARNING, logger="consumers.inference.adapters_topic"):
        await listener.start()
        await asyncio.wait_for(listener.caught_up.wait(), 1.0)
        await listener.stop()
    assert sink.registered == [("acme/good", 1), ("acme/good", 2)]
    assert listener.versions == {"acme/good": 2}
    assert any("adapter_path_refused" in r.getMessage() for r in caplog.records)
