"""TopicFollower: reads every partition of one topic outside any consumer group.

Every inference consumer must see every record of the control topic (any of them may hold the
request being cancelled) and of the adapters topic (a table every consumer needs whole), so
neither is read through the request group. Reads go through `Transport.reader`, so a follower
runs the same against Kafka and the in-memory bus. Subclasses handle records in `on_record`.
"""

from __future__ import annotations

import asyncio
import logging

from streamer.transport import PartitionReader, TopicPartition, Transport

log = logging.getLogger(__name__)

POLL_TIMEOUT_MS = 200


class TopicFollower:
    """`from_beginning`: replay what the topic holds (a table); otherwise only what comes next."""

    name = "lorastream-follower"

    def __init__(self, transport: Transport, topic: str, *, from_beginning: bool) -> None:
        self._transport = transport
        self._topic = topic
        self._from_beginning = from_beginning
        self._reader: PartitionReader | None = None
        self._task: asyncio.Task[None] | None = None
        self.caught_up = asyncio.Event()  # set once every record present at start was handled

    async def start(self) -> None:
        reader = self._transport.reader(self._topic)
        await reader.start()
        self._reader = reader
        ends: dict[TopicPartition, int] = {}
        if self._from_beginning:
            await reader.seek_to_beginning()
            ends = await reader.end_offsets()
        else:
            await reader.seek_to_end()
        self._task = asyncio.create_task(self._run(ends), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._reader is not None:
            await self._reader.stop()

    async def _run(self, ends: dict[TopicPartition, int]) -> None:
        behind = {tp for tp, end in ends.items() if end > 0}
        if not behind:
            self.caught_up.set()
        while True:
            batch = await self._reader.poll(timeout_ms=POLL_TIMEOUT_MS)
            for tp, records in batch.items():
                for record in records:
                    try:
                        self.on_record(record.key, record.value, record.offset)
                    except Exception:  # one bad record must not stop the follower
                        log.exception("%s: handling %s@%d failed", self.name, tp, record.offset)
                    if tp in behind and record.offset + 1 >= ends[tp]:
                        behind.discard(tp)
            if not behind and not self.caught_up.is_set():
                self.caught_up.set()

    def on_record(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        raise NotImplementedError
