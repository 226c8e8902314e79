"""A stand-in for the inference consumer: reads requests, answers with scripted records."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from aiokafka import TopicPartition

from schemas import (
    CancelRequest,
    Final,
    FinishReason,
    InferenceRequest,
    ReplyAddress,
    ReplyRecord,
    TokenChunk,
    decode_control,
    decode_request,
    encode,
)
from streamer import KafkaConfig, TopicNames, TopicSpec, ensure_topics
from streamer.kafka import start_consumer, start_producer

Script = Callable[[InferenceRequest], Sequence[ReplyRecord]]
REQUEST_PARTITIONS = 2


def answer_records(
    request_id: str,
    text: str,
    *,
    attempt: int = 0,
    chunk_chars: int = 4,
    stream: bool = True,
    reply_token: str | None = None,
) -> list[ReplyRecord]:
    """`text` as TokenChunks of `chunk_chars` characters (if streaming), then the Final."""
    pieces = [text[i : i + chunk_chars] for i in range(0, len(text), chunk_chars)] if stream else []
    records: list[ReplyRecord] = [
        TokenChunk(request_id, attempt, seq, piece, [ord(c) for c in piece], reply_token=reply_token)
        for seq, piece in enumerate(pieces)
    ]
    records.append(Final(request_id, attempt, len(pieces), FinishReason.LENGTH, text, reply_token=reply_token))
    return records


def echo(request: InferenceRequest) -> list[ReplyRecord]:
    """The default script: answer `echo(<adapter>): <prompt>`."""
    return answer_records(
        request.request_id,
        expected_echo(request.prompt, request.adapter_id),
        stream=request.stream,
        reply_token=request.reply_token,
    )


def expected_echo(prompt: str, adapter_id: str | None = None) -> str:
    return f"echo({adapter_id or 'base'}): {prompt}"


class FakeService:
    """Answers every request on `topics.requests` with `script(request)`, in order.

    `requests` receives (key, request) of each request read; `cancels` each cancelled id.
    """

    def __init__(self, cfg: KafkaConfig, topics: TopicNames, script: Script = echo) -> None:
        self.cfg = cfg
        self.topics = topics
        self.script = script
        self.requests: asyncio.Queue[tuple[bytes | None, InferenceRequest]] = asyncio.Queue()
        self.cancels: asyncio.Queue[str] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> FakeService:
        await ensure_topics(
            self.cfg,
            [
                TopicSpec(self.topics.requests, REQUEST_PARTITIONS),
                TopicSpec(self.topics.control, 1),
            ],
        )
        self._producer = await start_producer(self.cfg)
        self._consumer = await start_consumer(self.cfg, auto_offset_reset="earliest")
        partitions = [TopicPartition(self.topics.requests, p) for p in range(REQUEST_PARTITIONS)]
        self._consumer.assign([*partitions, TopicPartition(self.topics.control, 0)])
        self._task = asyncio.create_task(self._serve())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()
        await self._producer.stop()

    async def send(self, reply_to: ReplyAddress, records: Sequence[ReplyRecord]) -> None:
        """Publish answer records, in order, to a reply address."""
        futures = [
            await self._producer.send(
                reply_to.topic,
                encode(record),
                key=record.request_id.encode(),
                partition=reply_to.partition,
            )
            for record in records
        ]
        await asyncio.gather(*futures)

    async def next_cancel(self, timeout_s: float = 10.0) -> str:
        return await asyncio.wait_for(self.cancels.get(), timeout_s)

    async def _serve(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for tp, messages in batches.items():
                for message in messages:
                    if tp.topic == self.topics.control:
                        event = decode_control(message.value)
                        if isinstance(event, CancelRequest):
                            self.cancels.put_nowait(event.request_id)
                        continue
                    request = decode_request(message.value)
                    self.requests.put_nowait((message.key, request))
                    if request.reply_to is not None:
                        await self.send(request.reply_to, self.script(request))
