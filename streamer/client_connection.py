"""What a LoraClient holds open: a producer, the reader of its reply partition, the private reply
topic it created (deleted when it stops), and the best-effort cancels still being published."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from schemas import CancelRequest, ReplyAddress, encode
from streamer.admin import delete_topics, ensure_topics, reply_topic_spec
from streamer.config import KafkaConfig
from streamer.kafka import start_producer
from streamer.reply_reader import ReplyReader

log = logging.getLogger(__name__)

_CLOSE_TIMEOUT_S = 5.0  # for the last cancels to go out, then for the reply topic's deletion


class ClientConnection:
    """Started and stopped as one; `owns_reply_topic`: create `reply_to.topic` on start, delete on stop."""

    def __init__(
        self, config: KafkaConfig, reply_to: ReplyAddress, *, owns_reply_topic: bool, control_topic: str
    ) -> None:
        self.config = config
        self.reply_to = reply_to
        self.owns_reply_topic = owns_reply_topic
        self.control_topic = control_topic
        self.reader = ReplyReader(config, reply_to)
        self.producer: AIOKafkaProducer | None = None
        self._made_reply_topic = False
        self._cancels: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Connect, create the private reply topic if any, and start reading replies."""
        try:
            self.producer = await start_producer(self.config)
            if self.owns_reply_topic:
                await ensure_topics(self.config, [reply_topic_spec(self.reply_to.topic)])
                self._made_reply_topic = True
            await self.reader.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Let the cancels still being published go out (a few seconds at most), then disconnect."""
        if self._cancels:
            await asyncio.wait(self._cancels, timeout=_CLOSE_TIMEOUT_S)
        await self.reader.stop()
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None
        if self._made_reply_topic:
            self._made_reply_topic = False
            try:
                await delete_topics(self.config, [self.reply_to.topic], timeout_s=_CLOSE_TIMEOUT_S)
            except Exception as exc:  # the topic expires by retention if it stays behind
                log.warning("could not delete reply topic %s: %r", self.reply_to.topic, exc)

    def cancel_in_background(self, request_id: str) -> None:
        task = asyncio.create_task(self.publish_cancel(request_id))
        self._cancels.add(task)
        task.add_done_callback(self._cancels.discard)

    async def publish_cancel(self, request_id: str) -> None:
        """Best effort: tell the service to stop working on a request nobody waits for."""
        producer = self.producer
        if producer is None:
            return
        try:
            await producer.send_and_wait(
                self.control_topic, encode(CancelRequest(request_id)), key=request_id.encode()
            )
        except KafkaError as exc:
            log.warning("could not publish cancel for %s: %r", request_id, exc)
