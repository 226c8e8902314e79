"""Listens to the control topic (cancellations) on every partition, outside the consumer group.

Every inference consumer must see every cancellation, since any of them may hold the request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiokafka import TopicPartition

from schemas import CancelRequest, InvalidEvent, decode_control
from streamer import KafkaConfig, describe_topics, make_consumer

log = logging.getLogger(__name__)


class ControlListener:
    def __init__(self, kafka: KafkaConfig, topic: str, on_cancel: Callable[[str], None]) -> None:
        self._kafka = kafka
        self._topic = topic
        self._on_cancel = on_cancel
        self._consumer = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        infos = await describe_topics(self._kafka, [self._topic])
        tps = [TopicPartition(self._topic, p) for info in infos for p in range(info.partitions)]
        consumer = make_consumer(self._kafka)
        await consumer.start()
        consumer.assign(tps)
        if tps:
            await consumer.seek_to_end(*tps)
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(), name="lorastream-control")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    try:
                        event = decode_control(record.value or b"")
                    except InvalidEvent as exc:
                        log.warning("ignoring control record at %s: %s", record.offset, exc)
                        continue
                    if isinstance(event, CancelRequest):
                        self._on_cancel(event.request_id)
