"""What a service may ask of the message bus. No aiokafka here: implementations adapt to it.

Errors: implementations raise aiokafka's exception classes (`aiokafka.errors.*`) for broker-side
failures, so `streamer.send_policy.classify` sorts failures from either implementation alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import NamedTuple, Protocol


class TopicPartition(NamedTuple):
    """Equal to and hashed like aiokafka's TopicPartition (both are (topic, partition) tuples)."""

    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class Record:
    tp: TopicPartition
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class OffsetAndMetadata:
    offset: int  # the next offset to read
    metadata: str = ""


class RebalanceListener(Protocol):
    """Called on the event loop between polls; a group member owns nothing in between."""

    async def on_revoked(self, partitions: Sequence[TopicPartition]) -> None: ...
    async def on_assigned(self, partitions: Sequence[TopicPartition]) -> None: ...


class Producer(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...

    async def send(
        self, topic: str, value: bytes | None, *, key: bytes | None = None, partition: int | None = None
    ) -> asyncio.Future[None]:
        """Enqueue one record; the returned future resolves on the broker's acknowledgement or
        raises the send's error. Awaiting `send` itself may raise too: UnknownTopicOrPartitionError
        only when the broker says the topic or partition does not exist, TopicAuthorizationFailedError
        when its ACLs refuse, KafkaTimeoutError when it cannot tell (transient)."""
        ...


class GroupConsumer(Protocol):
    """A member of a consumer group subscribed to some topics; offsets committed by the caller."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def poll(self, timeout_ms: int, max_records: int | None = None) -> dict[TopicPartition, list[Record]]: ...
    def assignment(self) -> frozenset[TopicPartition]: ...
    def highwater(self, tp: TopicPartition) -> int | None: ...
    def pause(self, *tps: TopicPartition) -> None: ...
    def resume(self, *tps: TopicPartition) -> None: ...
    def seek(self, tp: TopicPartition, offset: int) -> None: ...
    async def commit(self, offsets: Mapping[TopicPartition, OffsetAndMetadata]) -> None: ...
    async def committed(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, OffsetAndMetadata | None]: ...
    async def beginning_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]: ...
    async def end_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]: ...


class PartitionReader(Protocol):
    """Reads every partition of one topic outside any group (tables, control streams)."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def poll(self, timeout_ms: int, max_records: int | None = None) -> dict[TopicPartition, list[Record]]: ...
    async def end_offsets(self) -> dict[TopicPartition, int]: ...
    async def seek_to_beginning(self) -> None: ...
    async def seek_to_end(self) -> None: ...
    def seek(self, tp: TopicPartition, offset: int) -> None: ...

    async def offsets_for_times(self, timestamp_ms: int) -> dict[TopicPartition, int | None]:
        """Per partition, the first offset whose record timestamp is >= `timestamp_ms`; None where
        no record is that recent (Kafka's ListOffsets by time)."""
        ...


class Admin(Protocol):
    async def describe_topic(self, topic: str) -> dict:
        """aiokafka's describe_topics entry for one topic: {'topic', 'error_code', 'partitions': [...]}."""
        ...


class Transport(Protocol):
    """Makes the clients a service uses; each is started and stopped by its user."""

    def producer(self, *, linger_ms: int = 0) -> Producer: ...
    def group_consumer(
        self,
        topics: Sequence[str],
        *,
        group_id: str,
        listener: RebalanceListener,
        group_instance_id: str | None = None,
    ) -> GroupConsumer: ...
    def reader(self, topic: str) -> PartitionReader: ...
    def admin(self) -> AbstractAsyncContextManager[Admin]: ...
    async def ensure_topics(self, specs: Sequence[object]) -> None:
        """Create what is missing of `streamer.admin.TopicSpec`s (no-op where they exist)."""
        ...
