"""Follows the compacted adapters topic and tells the engine about new and retired versions.

The topic is a table adapter_id → latest AdapterEvent; every inference consumer replays it whole
at start (waiting, up to a limit, until it has caught up before taking requests) and then
follows it. A new version is served to requests admitted after it arrives; requests already
running finish on the version they started with (the engine keeps that version pinned). A
`deleted` event or a tombstone retires the id: later requests get `adapter_not_found`.

Every record is input from whoever can write the topic (Kafka ACLs decide who: docs/security.md),
so a record is logged and skipped, never applied, when it does not decode, when its key is not its
adapter_id (compaction would keep it beside the id's own records), when it is older than the one
applied (a lower revision, or the same revision and a lower version: a rollback is a higher
revision naming an older version) or out of range, or when the engine refuses its location (a uri outside the
configured adapter roots or buckets: adapter_path_refused). The id then keeps the version it had.
"""

from __future__ import annotations

import logging
from typing import Protocol

from streamer.follower import TopicFollower
from gpu_engine.adapter_ref import AdapterRef
from gpu_engine.errors import EngineError
from schemas import InvalidEvent, decode_adapter_event
from streamer.transport import Transport

log = logging.getLogger(__name__)


class AdapterSink(Protocol):
    """The engine side of the registry (gpu_engine.engine_thread.EngineThread fits). Any thread."""

    def register_adapter(self, ref: AdapterRef) -> None:
        """Raises EngineError (nothing changes) when the ref's location is refused."""

    def retire_adapter(self, adapter_id: str) -> None: ...


class AdaptersTopicFollower(TopicFollower):
    name = "lorastream-adapter-registry"

    def __init__(self, transport: Transport, topic: str, sink: AdapterSink) -> None:
        super().__init__(transport, topic, from_beginning=True)
        self._sink = sink
        self.versions: dict[str, int] = {}  # adapter_id → latest version applied (for /metrics, tests)
        self.revisions: dict[str, int] = {}  # adapter_id → the revision of that version

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
        if key is not None and key != event.adapter_id.encode():
            log.warning("ignoring adapters record at offset %d: key %r is not its adapter_id %r", offset, key,
                        event.adapter_id)
            return
        if event.deleted:
            self._retire(event.adapter_id)
            return
        applied = (self.revisions.get(event.adapter_id, 0), self.versions.get(event.adapter_id, 0))
        if (event.revision, event.version) < applied:
            log.warning("ignoring adapter %s revision %d version %d: revision %d version %d is newer",
                        event.adapter_id, event.revision, event.version, *applied)
            return
        try:
            ref = AdapterRef(event.adapter_id, event.version, event.uri or None, event.checksum)
        except ValueError as exc:
            log.warning("ignoring adapters record at offset %d: %s", offset, exc)
            return
        try:
            self._sink.register_adapter(ref)
        except EngineError as exc:
            log.warning("ignoring adapters record at offset %d: %s: %s", offset, exc.code, exc)
            return
        self.versions[event.adapter_id] = event.version
        self.revisions[event.adapter_id] = event.revision
        log.info("adapter %s: version %d (revision %d) at %s", event.adapter_id, event.version, event.revision,
                 event.uri)

    def _retire(self, adapter_id: str) -> None:
        self.versions.pop(adapter_id, None)
        self.revisions.pop(adapter_id, None)
        self._sink.retire_adapter(adapter_id)
        log.info("adapter %s retired", adapter_id)
