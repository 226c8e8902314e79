"""What the inference scenarios drive: a fake engine, and one bus (memory or Kafka) with helpers.

`FakeEngine` answers a prompt with its words, one token event per word, on the event loop (the
service hands events to the loop with call_soon_threadsafe, so any thread works). A prompt that
starts with "hold" waits until `release()`, or until the service aborts it (then it ends
`cancelled`, as the engine does).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from consumers.config import ServeConfig
from consumers.inference import InferenceService
from gpu_engine.types import FinishReason, GenerationEvent, GenerationRequest
from schemas import decode_reply, encode
from streamer import KafkaConfig, TopicNames, TopicSpec
from streamer.transport import Record, TopicPartition, Transport

WAIT_S = 30.0  # generous: Kafka rebalances take seconds; memory scenarios finish in milliseconds


class FakeEngine:
    def __init__(self, *, hold: bool = True) -> None:
        self.hold = hold  # False: "hold" prompts are answered at once too
        self.submitted: list[GenerationRequest] = []
        self.aborted: list[str] = []
        self.held: dict[str, Callable[[GenerationEvent], None]] = {}
        self.changed = asyncio.Event()  # set whenever something is submitted or held

    def start(self) -> None:
        pass

    def stop(self, timeout_s: float = 0.0) -> None:
        pass

    def submit(self, req: GenerationRequest, on_event: Callable[[GenerationEvent], None]) -> None:
        self.submitted.append(req)
        if self.hold and req.prompt.startswith("hold"):
            self.held[req.request_id] = on_event
        else:
            _answer(req.request_id, req.prompt, on_event)
        self.changed.set()

    def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)
        on_event = self.held.pop(request_id, None)
        if on_event is not None:
            on_event(GenerationEvent(request_id, finish_reason=FinishReason.CANCELLED))

    def release(self) -> None:
        held, self.held = self.held, {}
        for request_id, on_event in held.items():
            _answer(request_id, "released answer", on_event)

    async def wait_held(self, n: int) -> None:
        while len(self.held) < n:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), WAIT_S)


def _answer(request_id: str, prompt: str, on_event: Callable[[GenerationEvent], None]) -> None:
    words = prompt.split()
    for i, word in enumerate(words):
        on_event(GenerationEvent(request_id, text=word + " ", token_ids=(i,), prompt_tokens=len(words)))
    on_event(GenerationEvent(request_id, finish_reason=FinishReason.LENGTH, completion_tokens=len(words)))


@dataclass
class Bus:
    """One message bus for one test: fresh topic names, and what a scenario needs of it."""

    kind: str  # "memory" or "kafka"
    transport: Transport
    topics: TopicNames
    kafka: KafkaConfig | None = None
    services: list[tuple[InferenceService, asyncio.Task[None]]] = field(default_factory=list)

    @property
    def group_id(self) -> str:
        return f"{self.topics.prefix}.inference"

    def reply_topic(self, name: str = "a") -> str:
        return f"{self.topics.prefix}.replies.{name}"

    async def create_reply_topic(self, topic: str, partitions: int = 1) -> None:
        await self.transport.ensure_topics([TopicSpec(topic, partitions)])

    async def start_service(self, engine: FakeEngine, **config) -> InferenceService:
        config.setdefault("request_partitions", 2)
        config.setdefault("chunk_flush_ms", 1.0)
        config.setdefault("commit_interval_ms", 10.0)
        config.setdefault("shutdown_drain_s", 0.1)
        serve = ServeConfig(group_id=self.group_id, consumer_id=f"c{len(self.services)}", **config)
        service = InferenceService(self.transport, self.topics, serve, engine)
        task = asyncio.create_task(service.run())
        ready = asyncio.create_task(service.ready.wait())
        done, _ = await asyncio.wait({task, ready}, timeout=WAIT_S, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
        assert ready in done, "the service did not start polling"
        self.services.append((service, task))
        return service

    async def stop_services(self) -> None:
        for service, _ in self.services:
            service.stop()
        await asyncio.wait_for(asyncio.gather(*(task for _, task in self.services)), WAIT_S)

    async def send(self, topic: str, value: bytes, *, key: bytes | None = None, partition: int | None = None) -> None:
        producer = self.transport.producer()
        await producer.start()
        try:
            await (await producer.send(topic, value, key=key, partition=partition))
        finally:
            await producer.stop()

    async def request(self, request, partition: int | None = None) -> None:
        await self.send(self.topics.requests, encode(request), key=request.request_id.encode(), partition=partition)

    async def read(self, topic: str, until: Callable[[list[Record]], bool], timeout_s: float = WAIT_S) -> list[Record]:
        """Every record of `topic`, read from the beginning until `until(records)` holds."""
        reader = self.transport.reader(topic)
        await reader.start()
        records: list[Record] = []
        try:
            await reader.seek_to_beginning()
            async with asyncio.timeout(timeout_s):
                while not until(records):
                    for batch in (await reader.poll(timeout_ms=50)).values():
                        records.extend(batch)
        finally:
            await reader.stop()
        return records

    async def replies(self, topic: str, until: Callable[[list], bool]) -> list:
        records = await self.read(topic, lambda rs: until([decode_reply(r.value) for r in rs]))
        return [decode_reply(r.value) for r in records]

    async def all_of(self, topic: str) -> list[Record]:
        """What `topic` holds now (reads until the end offsets seen at start)."""
        reader = self.transport.reader(topic)
        await reader.start()
        try:
            ends = await reader.end_offsets()
        finally:
            await reader.stop()
        total = sum(ends.values())
        return await self.read(topic, lambda rs: len(rs) >= total) if total else []

    async def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset of a requests partition (None: nothing committed)."""
        if self.kind == "memory":
            entry = self.transport.committed_offsets(self.group_id).get(tp)
            return entry.offset if entry is not None else None
        from streamer.admin import admin_client

        async with admin_client(self.kafka) as admin:
            found = await admin.list_consumer_group_offsets(self.group_id, partitions=[tp])
        meta = found.get(tp)
        return meta.offset if meta is not None and meta.offset >= 0 else None

    async def wait_committed(self, tp: TopicPartition, offset: int) -> None:
        # committed offsets have no notification on a broker: poll the group (quickly on memory)
        async with asyncio.timeout(WAIT_S):
            while (await self.committed(tp) or 0) < offset:
                await asyncio.sleep(0.02 if self.kind == "kafka" else 0.001)


def new_prefix() -> str:
    return f"scn-{uuid.uuid4().hex[:10]}"
