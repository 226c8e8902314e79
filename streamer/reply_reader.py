"""The background task that reads one reply partition and routes records to waiting requests."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from schemas import ChunkBatch, InvalidEvent, ReplyAddress, decode_reply
from streamer.config import KafkaConfig
from streamer.errors import ClientClosed
from streamer.kafka import start_consumer
from streamer.retry import READ_RETRY
from streamer.replies import ReplyDemux

log = logging.getLogger(__name__)

_POLL_TIMEOUT_MS = 500


class ReplyReader:
    """Reads `address` from its current end with manual `assign` (no consumer group)."""

    def __init__(self, cfg: KafkaConfig, address: ReplyAddress) -> None:
        self.cfg = cfg
        self.partition = TopicPartition(address.topic, address.partition or 0)
        self.demux = ReplyDemux()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Returns once the start position is fixed: any reply produced later will be read."""
        self._consumer = await start_consumer(self.cfg, auto_offset_reset="latest")
        try:
            self._consumer.assign([self.partition])
            await self._consumer.seek_to_end(self.partition)
            await self._consumer.position(self.partition)
        except BaseException:
            await self.stop()
            raise
        self._task = asyncio.create_task(self._run(), name="lorastream-reply-reader")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    def fail_all(self, exc: BaseException) -> None:
        """Wake every waiting request with `exc` and forget it."""
        for request_id in self.demux.request_ids:
            sink = self.demux.sink(request_id)
            self.demux.unregister(request_id)
            if sink is not None:
                sink(exc)

    async def _run(self) -> None:
        try:
            await self._read_forever()
        except Exception as exc:  # a bug, not a broker hiccup: nobody would get answers now
            log.exception("the reply reader stopped")
            self.fail_all(ClientClosed(f"the reply reader stopped: {exc!r}"))
            raise

    async def _read_forever(self) -> None:
        consumer = self._consumer
        failures = 0
        while consumer is not None:
            try:
                batches = await consumer.getmany(timeout_ms=_POLL_TIMEOUT_MS)
            except KafkaError as exc:
                failures += 1
                delay_s = READ_RETRY.backoff_s(failures)
                log.warning("reading replies failed (%r); retrying in %.1f s", exc, delay_s)
                await asyncio.sleep(delay_s)
                continue
            failures = 0
            for messages in batches.values():
                for message in messages:
                    self._dispatch(message.value)

    def _dispatch(self, value: bytes | None) -> None:
        if value is None:
            return
        try:
            record = decode_reply(value)
        except InvalidEvent as exc:
            log.warning("ignoring an undecodable reply record: %s", exc)
            return
        if isinstance(record, ChunkBatch):
            for chunk in record.chunks:
                self.demux.dispatch(chunk)
        else:
            self.demux.dispatch(record)
