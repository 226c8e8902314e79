"""The in-memory bus's storage: topics of partitioned record logs, and a change signal.

A log never drops records (no retention, no compaction). Keys are partitioned with aiokafka's
default partitioner (murmur2, as the Java client), so a keyed record lands on the partition a
broker would put it on. Waiting is on `Signal`, an asyncio event that every append, rebalance,
resume or seek fires: readers never sleep in a loop.
"""

from __future__ import annotations

import asyncio
import bisect
import time

from aiokafka.errors import UnknownTopicOrPartitionError
from aiokafka.partitioner import DefaultPartitioner

from streamer.transport.protocol import Record, TopicPartition

_PARTITIONER = DefaultPartitioner()


class Signal:
    """Wakes every waiter once per `fire`; a waiter that arrives later waits for the next one."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout_s: float) -> bool:
        """True when fired within `timeout_s`, False on timeout."""
        if timeout_s <= 0:
            return False
        try:
            await asyncio.wait_for(self._event.wait(), timeout_s)
        except TimeoutError:
            return False
        return True


class TopicLogs:
    """Every topic's partitions as lists of records; offsets are list indices."""

    def __init__(self) -> None:
        self._topics: dict[str, list[list[Record]]] = {}
        self.changed = Signal()

    def create(self, topic: str, num_partitions: int) -> bool:
        """Create `topic` unless it exists; True when it was created."""
        if num_partitions < 1:
            raise ValueError("a topic needs at least one partition")
        if topic in self._topics:
            return False
        self._topics[topic] = [[] for _ in range(num_partitions)]
        return True

    def exists(self, topic: str) -> bool:
        return topic in self._topics

    def num_partitions(self, topic: str) -> int:
        """0 when the topic does not exist."""
        return len(self._topics.get(topic, ()))

    def partitions(self, topic: str) -> list[TopicPartition]:
        return [TopicPartition(topic, p) for p in range(self.num_partitions(topic))]

    def partition_for(self, topic: str, key: bytes | None, partition: int | None) -> int:
        """Where a record goes; raises UnknownTopicOrPartitionError as a broker's metadata would."""
        n = self.num_partitions(topic)
        if n == 0:
            raise UnknownTopicOrPartitionError(f"topic {topic!r} does not exist")
        if partition is not None:
            if not 0 <= partition < n:
                raise UnknownTopicOrPartitionError(f"{topic} has no partition {partition}")
            return partition
        every = list(range(n))
        return _PARTITIONER(key, every, every)

    def append(self, topic: str, partition: int, key: bytes | None, value: bytes | None) -> Record:
        log = self._topics[topic][partition]
        record = Record(TopicPartition(topic, partition), len(log), key, value, int(time.time() * 1000))
        log.append(record)
        self.changed.fire()
        return record

    def end_offset(self, tp: TopicPartition) -> int:
        return len(self._log(tp))

    def read(self, tp: TopicPartition, offset: int, max_records: int) -> list[Record]:
        return self._log(tp)[offset : offset + max_records]

    def offset_for_time(self, tp: TopicPartition, timestamp_ms: int) -> int | None:
        """The first offset whose timestamp is >= `timestamp_ms` (appends are in time order)."""
        log = self._log(tp)
        offset = bisect.bisect_left(log, timestamp_ms, key=lambda record: record.timestamp_ms)
        return offset if offset < len(log) else None

    def _log(self, tp: TopicPartition) -> list[Record]:
        partitions = self._topics.get(tp.topic)
        if partitions is None or not 0 <= tp.partition < len(partitions):
            raise UnknownTopicOrPartitionError(f"{tp.topic}:{tp.partition} does not exist")
        return partitions[tp.partition]


class Positions:
    """One client's next offset per partition and its paused partitions; reads what is there."""

    DEFAULT_MAX_RECORDS = 500  # aiokafka's max_poll_records default

    def __init__(self, logs: TopicLogs) -> None:
        self._logs = logs
        self.next: dict[TopicPartition, int] = {}
        self.paused: set[TopicPartition] = set()

    def take(self, max_records: int | None) -> dict[TopicPartition, list[Record]]:
        budget = max_records or self.DEFAULT_MAX_RECORDS
        batch: dict[TopicPartition, list[Record]] = {}
        for tp in list(self.next):
            if budget <= 0:
                break
            if tp in self.paused:
                continue
            records = self._logs.read(tp, self.next[tp], budget)
            if records:
                batch[tp] = records
                budget -= len(records)
                del self.next[tp]  # re-inserted last: the next poll starts with another partition
                self.next[tp] = records[-1].offset + 1
        return batch

    async def poll(self, timeout_ms: int, max_records: int | None) -> dict[TopicPartition, list[Record]]:
        deadline = asyncio.get_running_loop().time() + timeout_ms / 1000.0
        while True:
            batch = self.take(max_records)
            remaining_s = deadline - asyncio.get_running_loop().time()
            if batch or not await self._logs.changed.wait(remaining_s):
                return batch
