"""Follows the compacted adapters topic and tells the engine about new and retired versions.

The topic is a table adapter_id → latest AdapterEvent; every inference consumer replays it whole
at start (waiting, up to a limit, until it has caught up before taking requests) and then
follows it. A new version is served to requests admitted after it arrives; requests already
running finish on the version they started with (the engine keeps that version pinned). A
`deleted` event or a tombstone retires the id: later requests get `adapter_not_found`.
"""

from __future__ import annotations

import logging
from typing import Protocol

from consumers.follower import TopicFollower
from gpu_engine.adapter_ref import AdapterRef
from schemas import InvalidEvent, decode_adapter_event
from streamer import KafkaConfig

log = logging.getLogger(__name__)


class AdapterSink(Protocol):
    """The engine side of the registry (gpu_engine.runner.EngineRunner fits). Any thread."""

    def register_adapter(self, ref: AdapterRef) -> None: ...
    def retire_adapter(self, adapter_id: str) -> None: ...


class AdapterRegistryListener(TopicFollower):
    name = "lorastream-adapter-registry"

    def __init__(self, kafka: KafkaConfig, topic: str, sink: AdapterSink) -> None:
        super().__init__(kafka, topic, from_beginning=True)
        self._sink = sink
        self.versions: dict[str, int] = {}  # adapter_id → latest version applied (for /metrics, tests)

    def on_record(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        if value is None:  # a tombstone: compaction's way of deleting the key
            if key:
                self._retire(key.decode("utf-8", "replace"))
            return
        try:
            event = decode_adapter_event(value)
        except InvalidEvent as exc:
            log.warning("ignoring adapters record at offset %d: %s", offset, exc)
            return
        if event.deleted:
            self._retire(event.adapter_id)
            return
        if event.version < self.versions.get(event.adapter_id, 0):
            log.warning("ignoring adapter %s version %d: %d is newer", event.adapter_id, event.version,
                        self.versions[event.adapter_id])
            return
        try:
            ref = AdapterRef(event.adapter_id, event.version, event.uri or None, event.checksum)
        except ValueError as exc:
            log.warning("ignoring adapters record at offset %d: %s", offset, exc)
            return
        self.versions[event.adapter_id] = event.version
        self._sink.register_adapter(ref)
        log.info("adapter %s: version %d at %s", event.adapter_id, event.version, event.uri)

    def _retire(self, adapter_id: str) -> None:
        self.versions.pop(adapter_id, None)
        self._sink.retire_adapter(adapter_id)
        log.info("adapter %s retired", adapter_id)
