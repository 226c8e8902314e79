"""KafkaTransport: the seam's interfaces over aiokafka, with the project's client defaults.

Producers and consumers come from `streamer.kafka` (acks=all, no idempotence, short fetch waits,
no auto-commit). A send whose topic the producer has no metadata for waits at most
`metadata_wait_s`, then asks the broker once what it knows: a topic or partition the broker says
does not exist raises UnknownTopicOrPartitionError, one its ACLs refuse raises
TopicAuthorizationFailedError, and when the broker cannot tell the send raises KafkaTimeoutError
(transient: the caller may retry).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaTimeoutError, TopicAuthorizationFailedError, UnknownTopicOrPartitionError

from streamer.admin import admin_client, describe_topics, ensure_topics
from streamer.config import KafkaConfig
from streamer.kafka import make_consumer, start_consumer, start_producer
from streamer.transport.protocol import OffsetAndMetadata, RebalanceListener, Record, TopicPartition

DEFAULT_METADATA_WAIT_S = 2.0  # a topic the producer has no metadata for yet: the longest a send waits


class KafkaTransport:
    def __init__(self, kafka: KafkaConfig, *, metadata_wait_s: float = DEFAULT_METADATA_WAIT_S) -> None:
        if metadata_wait_s <= 0:
            raise ValueError("metadata_wait_s must be > 0")
        self.kafka = kafka
        self._metadata_wait_s = metadata_wait_s

    def producer(self, *, linger_ms: int = 0) -> KafkaProducer:
        return KafkaProducer(self.kafka, linger_ms, self._metadata_wait_s)

    def group_consumer(
        self,
        topics: Sequence[str],
        *,
        group_id: str,
        listener: RebalanceListener,
        group_instance_id: str | None = None,
    ) -> KafkaGroupConsumer:
        return KafkaGroupConsumer(self.kafka, topics, group_id, listener, group_instance_id)

    def reader(self, topic: str) -> KafkaReader:
        return KafkaReader(self.kafka, topic)

    @asynccontextmanager
    async def admin(self) -> AsyncIterator[KafkaAdmin]:
        async with admin_client(self.kafka) as admin:
            yield KafkaAdmin(admin)

    async def ensure_topics(self, specs: Sequence[object]) -> None:
        await ensure_topics(self.kafka, specs)


class KafkaProducer:
    def __init__(self, kafka: KafkaConfig, linger_ms: int, metadata_wait_s: float) -> None:
        self._kafka = kafka
        self._linger_ms = linger_ms
        self._producer: AIOKafkaProducer | None = None  # made by start
        self._metadata_wait_s = metadata_wait_s

    async def start(self) -> None:
        """Waits (START_RETRY) for a broker that is still coming up."""
        self._producer = await start_producer(self._kafka, linger_ms=self._linger_ms)

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def send(
        self, topic: str, value: bytes | None, *, key: bytes | None = None, partition: int | None = None
    ) -> asyncio.Future[None]:
        partitions = self._producer.client.cluster.partitions_for_topic(topic)
        if partitions and partition is not None and partition not in partitions:
            raise UnknownTopicOrPartitionError(f"{topic} has no partition {partition}")
        send = self._producer.send(topic, value, key=key, partition=partition)
        if partitions:
            return await send  # metadata known: send only appends to a batch
        try:
            return await asyncio.wait_for(send, self._metadata_wait_s)
        except (UnknownTopicOrPartitionError, TimeoutError, KafkaTimeoutError) as exc:
            raise await self._diagnose(topic, partition) from exc

    async def _diagnose(self, topic: str, partition: int | None) -> Exception:
        """What the broker says of a topic the producer has no metadata for."""
        try:
            cluster = await asyncio.wait_for(self._producer.client.fetch_all_metadata(), self._metadata_wait_s)
        except Exception:  # broker away: it cannot tell
            return KafkaTimeoutError(f"no metadata for {topic}")
        if topic in cluster.unauthorized_topics:
            return TopicAuthorizationFailedError(topic)
        partitions = cluster.partitions_for_topic(topic)
        if not partitions or (partition is not None and partition not in partitions):
            return UnknownTopicOrPartitionError(f"{topic}:{partition} does not exist")
        return KafkaTimeoutError(f"metadata for {topic} arrived late")


class KafkaGroupConsumer:
    def __init__(
        self,
        kafka: KafkaConfig,
        topics: Sequence[str],
        group_id: str,
        listener: RebalanceListener,
        group_instance_id: str | None,
    ) -> None:
        self._kafka = kafka
        self._topics = list(topics)
        self._group_id = group_id
        self._listener = listener
        self._group_instance_id = group_instance_id
        self._consumer: AIOKafkaConsumer | None = None  # made by start
        self._admin: AIOKafkaAdminClient | None = None  # committed offsets with metadata come from it

    async def start(self) -> None:
        """Waits (START_RETRY) for a broker that is still coming up."""
        self._consumer = await start_consumer(
            self._kafka, *self._topics, listener=_ListenerAdapter(self._listener), group_id=self._group_id,
            group_instance_id=self._group_instance_id, auto_offset_reset="earliest",
        )

    async def stop(self) -> None:
        try:
            if self._consumer is not None:
                await self._consumer.stop()
        finally:
            if self._admin is not None:
                await self._admin.close()

    async def poll(self, timeout_ms: int, max_records: int | None = None) -> dict[TopicPartition, list[Record]]:
        batch = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        return _records(batch)

    def assignment(self) -> frozenset[TopicPartition]:
        return frozenset(TopicPartition(tp.topic, tp.partition) for tp in self._consumer.assignment())

    def highwater(self, tp: TopicPartition) -> int | None:
        return self._consumer.highwater(_kafka_tp(tp))

    def pause(self, *tps: TopicPartition) -> None:
        self._consumer.pause(*map(_kafka_tp, tps))

    def resume(self, *tps: TopicPartition) -> None:
        self._consumer.resume(*map(_kafka_tp, tps))

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._consumer.seek(_kafka_tp(tp), offset)

    async def commit(self, offsets: Mapping[TopicPartition, OffsetAndMetadata]) -> None:
        await self._consumer.commit({_kafka_tp(tp): (om.offset, om.metadata) for tp, om in offsets.items()})

    async def committed(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, OffsetAndMetadata | None]:
        tps = list(tps)
        if self._admin is None:
            self._admin = AIOKafkaAdminClient(**self._kafka.aiokafka_kwargs())
            await self._admin.start()
        found = await self._admin.list_consumer_group_offsets(self._group_id, partitions=list(map(_kafka_tp, tps)))
        result: dict[TopicPartition, OffsetAndMetadata | None] = {}
        for tp in tps:
            meta = found.get(_kafka_tp(tp))
            ok = meta is not None and meta.offset >= 0
            result[tp] = OffsetAndMetadata(meta.offset, meta.metadata or "") if ok else None
        return result

    async def beginning_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        found = await self._consumer.beginning_offsets(list(map(_kafka_tp, tps)))
        return {TopicPartition(tp.topic, tp.partition): offset for tp, offset in found.items()}


class KafkaReader:
    def __init__(self, kafka: KafkaConfig, topic: str) -> None:
        self._kafka = kafka
        self._topic = topic
        self._consumer: AIOKafkaConsumer | None = None
        self._tps: list[KafkaTopicPartition] = []

    async def start(self) -> None:
        infos = await describe_topics(self._kafka, [self._topic])
        self._tps = [KafkaTopicPartition(self._topic, p) for info in infos for p in range(info.partitions)]
        self._consumer = make_consumer(self._kafka)
        await self._consumer.start()
        self._consumer.assign(self._tps)

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def poll(self, timeout_ms: int, max_records: int | None = None) -> dict[TopicPartition, list[Record]]:
        if not self._tps:  # aiokafka's getmany returns at once without partitions
            await asyncio.sleep(timeout_ms / 1000.0)
            return {}
        return _records(await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records))

    async def end_offsets(self) -> dict[TopicPartition, int]:
        if not self._tps:
            return {}
        found = await self._consumer.end_offsets(self._tps)
        return {TopicPartition(tp.topic, tp.partition): offset for tp, offset in found.items()}

    async def seek_to_beginning(self) -> None:
        if self._tps:
            await self._consumer.seek_to_beginning(*self._tps)

    async def seek_to_end(self) -> None:
        if self._tps:
            await self._consumer.seek_to_end(*self._tps)


class KafkaAdmin:
    def __init__(self, admin: AIOKafkaAdminClient) -> None:
        self._admin = admin

    async def describe_topic(self, topic: str) -> dict:
        (entry,) = await self._admin.describe_topics([topic])
        return entry


class _ListenerAdapter(ConsumerRebalanceListener):
    def __init__(self, listener: RebalanceListener) -> None:
        self._listener = listener

    async def on_partitions_revoked(self, revoked) -> None:
        await self._listener.on_revoked(sorted(TopicPartition(tp.topic, tp.partition) for tp in revoked))

    async def on_partitions_assigned(self, assigned) -> None:
        await self._listener.on_assigned(sorted(TopicPartition(tp.topic, tp.partition) for tp in assigned))


def _kafka_tp(tp: TopicPartition) -> KafkaTopicPartition:
    return KafkaTopicPartition(tp.topic, tp.partition)


def _records(batch) -> dict[TopicPartition, list[Record]]:
    return {
        TopicPartition(tp.topic, tp.partition): [
            Record(TopicPartition(tp.topic, tp.partition), r.offset, r.key, r.value, r.timestamp) for r in records
        ]
        for tp, records in batch.items()
    }
