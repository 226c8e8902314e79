"""MemoryTransport: the whole bus in one process, for tests that drive a service in milliseconds.

Topics exist only once created (`ensure_topics` or `create_topic`): a send to a missing topic or
partition raises UnknownTopicOrPartitionError and `Admin.describe_topic` answers error code 3,
as a broker with auto-creation off does, so a service's reply-topic checks are exercised for real.
Keyed records are partitioned as Kafka's clients do (murmur2); groups, rebalances and committed
offsets behave as memory_group.py says; readers see every partition that existed when they
started. Failures are aiokafka's exception classes, so `streamer.send_policy.classify` sorts them
as it sorts a broker's.

Fault injection: `fail_sends(topic, exc, times=n)` (the next n sends there raise `exc`),
`deny_writes(topic)` (sends raise TopicAuthorizationFailedError; with `describe=True` the admin
lookup says not authorized too), and `max_record_bytes` (larger records raise
MessageSizeTooLargeError, as the producer's max_request_size does).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from aiokafka.errors import IllegalStateError, MessageSizeTooLargeError, TopicAuthorizationFailedError

from streamer.transport.memory_group import Group, MemoryGroupConsumer
from streamer.transport.memory_log import Positions, TopicLogs
from streamer.transport.protocol import OffsetAndMetadata, RebalanceListener, Record, TopicPartition

DEFAULT_MAX_RECORD_BYTES = 1024 * 1024  # Kafka's default max.message.bytes / max_request_size
_UNKNOWN_TOPIC = 3
_TOPIC_AUTHORIZATION_FAILED = 29


class MemoryTransport:
    def __init__(self, *, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> None:
        if max_record_bytes < 1:
            raise ValueError("max_record_bytes must be >= 1")
        self.max_record_bytes = max_record_bytes
        self.logs = TopicLogs()
        self._groups: dict[str, Group] = {}
        self._failures: dict[str, list[BaseException]] = {}  # topic → exceptions the next sends raise
        self._denied_writes: set[str] = set()
        self._denied_describes: set[str] = set()

    # ---- Transport ---------------------------------------------------------------------------

    def producer(self, *, linger_ms: int = 0) -> MemoryProducer:
        return MemoryProducer(self)

    def group_consumer(
        self,
        topics: Sequence[str],
        *,
        group_id: str,
        listener: RebalanceListener,
        group_instance_id: str | None = None,
    ) -> MemoryGroupConsumer:
        group = self._groups.setdefault(group_id, Group(group_id, self.logs))
        return MemoryGroupConsumer(group, self.logs, topics, listener)

    def reader(self, topic: str) -> MemoryReader:
        return MemoryReader(self.logs, topic)

    @asynccontextmanager
    async def admin(self) -> AsyncIterator[MemoryAdmin]:
        yield MemoryAdmin(self)

    async def ensure_topics(self, specs: Sequence[object]) -> None:
        for spec in specs:
            self.create_topic(spec.name, spec.partitions)

    # ---- set-up and fault injection for tests ---------------------------------------------------

    def create_topic(self, topic: str, num_partitions: int = 1) -> None:
        self.logs.create(topic, num_partitions)

    def fail_sends(self, topic: str, exc: BaseException, *, times: int = 1) -> None:
        self._failures.setdefault(topic, []).extend([exc] * times)

    def deny_writes(self, topic: str, *, describe: bool = False) -> None:
        self._denied_writes.add(topic)
        if describe:
            self._denied_describes.add(topic)

    def committed_offsets(self, group_id: str) -> dict[TopicPartition, OffsetAndMetadata]:
        """What `group_id` has committed (for assertions)."""
        group = self._groups.get(group_id)
        return dict(group.committed) if group is not None else {}

    def records(self, topic: str) -> list[Record]:
        """Everything the topic holds, partition by partition (for assertions)."""
        return [r for tp in self.logs.partitions(topic) for r in self.logs.read(tp, 0, self.logs.end_offset(tp))]

    # ---- used by the clients ---------------------------------------------------------------------

    def append(self, topic: str, value: bytes | None, key: bytes | None, partition: int | None) -> Record:
        failures = self._failures.get(topic)
        if failures:
            raise failures.pop(0)
        if topic in self._denied_writes:
            raise TopicAuthorizationFailedError(topic)
        where = self.logs.partition_for(topic, key, partition)
        size = len(value or b"") + len(key or b"")
        if size > self.max_record_bytes:
            raise MessageSizeTooLargeError(f"record of {size} bytes > {self.max_record_bytes}")
        return self.logs.append(topic, where, key, value)

    def describe(self, topic: str) -> dict:
        if topic in self._denied_describes:
            return {"topic": topic, "error_code": _TOPIC_AUTHORIZATION_FAILED, "partitions": []}
        if not self.logs.exists(topic):
            return {"topic": topic, "error_code": _UNKNOWN_TOPIC, "partitions": []}
        partitions = [
            {"error_code": 0, "partition": p, "leader": 0, "replicas": [0], "isr": [0]}
            for p in range(self.logs.num_partitions(topic))
        ]
        return {"topic": topic, "error_code": 0, "is_internal": False, "partitions": partitions}


class MemoryProducer:
    def __init__(self, transport: MemoryTransport) -> None:
        self._transport = transport
        self._started = False

    async def start(self) -> None:
        self._started = True

    async def stop(self) -> None:
        self._started = False

    async def send(
        self, topic: str, value: bytes | None, *, key: bytes | None = None, partition: int | None = None
    ) -> asyncio.Future[None]:
        if not self._started:
            raise IllegalStateError("producer is not started")
        self._transport.append(topic, value, key, partition)
        acked = asyncio.get_running_loop().create_future()
        acked.set_result(None)
        return acked


class MemoryReader:
    def __init__(self, logs: TopicLogs, topic: str) -> None:
        self._logs = logs
        self._topic = topic
        self._positions = Positions(logs)

    async def start(self) -> None:
        for tp in self._logs.partitions(self._topic):
            self._positions.next[tp] = 0

    async def stop(self) -> None:
        self._positions.next.clear()

    async def poll(self, timeout_ms: int, max_records: int | None = None) -> dict[TopicPartition, list[Record]]:
        return await self._positions.poll(timeout_ms, max_records)

    async def end_offsets(self) -> dict[TopicPartition, int]:
        return {tp: self._logs.end_offset(tp) for tp in self._positions.next}

    async def seek_to_beginning(self) -> None:
        for tp in self._positions.next:
            self._positions.next[tp] = 0

    async def seek_to_end(self) -> None:
        for tp in self._positions.next:
            self._positions.next[tp] = self._logs.end_offset(tp)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        if tp not in self._positions.next:
            raise IllegalStateError(f"{tp} is not read by this reader")
        self._positions.next[tp] = offset

    async def offsets_for_times(self, timestamp_ms: int) -> dict[TopicPartition, int | None]:
        return {tp: self._logs.offset_for_time(tp, timestamp_ms) for tp in self._positions.next}


class MemoryAdmin:
    def __init__(self, transport: MemoryTransport) -> None:
        self._transport = transport

    async def describe_topic(self, topic: str) -> dict:
        return self._transport.describe(topic)
