"""One ordered queue of outgoing records in front of the producer.

Every answer record goes through here, so chunks, finals and errors leave in the order they
were produced (a per-request send task could overtake another). The delivery callback tells
the caller when the broker acknowledged a record — offsets are committed only after that.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

log = logging.getLogger(__name__)

_RETRY_BACKOFF_S = (0.05, 0.1, 0.2, 0.5, 1.0)
_BEST_EFFORT_TRIES = 2
_BEST_EFFORT_TIMEOUT_S = 2.0
_SEND_TIMEOUT_S = 10.0
_BAD_TOPIC_TTL_S = 60.0


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    value: bytes
    key: bytes | None = None
    partition: int | None = None
    on_delivered: Callable[[bool], None] | None = None
    best_effort: bool = False  # reply addresses come from senders: dropped if they do not exist


class Outbox:
    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._queue: asyncio.Queue[Outgoing] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._bad_topics: dict[str, float] = {}  # best-effort topics that failed: until when to skip

    def put(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        on_delivered: Callable[[bool], None] | None = None,
        best_effort: bool = False,
    ) -> None:
        self._queue.put_nowait(Outgoing(topic, value, key, partition, on_delivered, best_effort))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="lorastream-outbox")

    async def close(self, timeout_s: float) -> None:
        """Send what is queued (up to timeout_s), flush the producer, stop the sender task."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout_s)
            await asyncio.wait_for(self._producer.flush(), timeout_s)
        except TimeoutError:
            log.warning("outbox: %d records not sent before shutdown", self._queue.qsize())
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                await self._send(item)
            finally:
                self._queue.task_done()

    async def _send(self, item: Outgoing) -> None:
        loop = asyncio.get_running_loop()
        if item.best_effort and self._bad_topics.get(item.topic, 0.0) > loop.time():
            self._give_up(item)
            return
        timeout_s = _BEST_EFFORT_TIMEOUT_S if item.best_effort else _SEND_TIMEOUT_S
        attempt = 0
        while True:
            try:
                send = self._producer.send(item.topic, item.value, key=item.key, partition=item.partition)
                if self._producer.client.cluster.partitions_for_topic(item.topic):
                    future = await send  # metadata known: send only appends to a batch
                else:
                    future = await asyncio.wait_for(send, timeout_s)
                break
            except (KafkaError, TimeoutError, ValueError, AssertionError) as exc:
                attempt += 1
                if item.best_effort and attempt >= _BEST_EFFORT_TRIES and await self._missing(item):
                    log.warning("no such reply topic/partition %s: %r", item.topic, exc)
                    self._bad_topics[item.topic] = loop.time() + _BAD_TOPIC_TTL_S
                    self._give_up(item)
                    return
                delay = _RETRY_BACKOFF_S[min(attempt - 1, len(_RETRY_BACKOFF_S) - 1)]
                log.warning("send to %s failed (%r); retrying in %.2fs", item.topic, exc, delay)
                await asyncio.sleep(delay)
        if item.on_delivered is not None:
            callback = item.on_delivered
            future.add_done_callback(
                lambda f: callback(not f.cancelled() and f.exception() is None)
            )

    async def _missing(self, item: Outgoing) -> bool:
        """True only when the broker answers and says the topic or partition does not exist.

        A broker that cannot be reached (restarting, network) is not a reason to drop answers.
        """
        try:
            cluster = await asyncio.wait_for(self._producer.client.fetch_all_metadata(), 5.0)
        except (KafkaError, TimeoutError):
            return False
        partitions = cluster.partitions_for_topic(item.topic)
        if not partitions:
            return True
        return item.partition is not None and item.partition not in partitions

    @staticmethod
    def _give_up(item: Outgoing) -> None:
        if item.on_delivered is not None:
            item.on_delivered(False)
