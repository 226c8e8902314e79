"""KafkaTransport: the seam's interfaces over aiokafka, with the project's client defaults.

Producers and consumers come from `streamer.kafka` (acks=all, no idempotence, short fetch waits,
no auto-commit). A send whose topic the producer has no metadata for waits at most
`metadata_wait_s`, then asks the broker once what it knows: a topic or partition the broker says
does not exist raises UnknownTopicOrPartitionError, one its ACLs refuse raises
TopicAuthorizationFailedError, and when the broker cannot tell the send raises KafkaTimeoutError
(transient: the caller may retry).

The producer never lets a broker create a topic (see `refuse_topic_auto_creation`) and forgets
the metadata of a topic that turned out missing or that it has not sent to for
`forget_idle_s`: aiokafka otherwise asks for every topic it ever sent to on each metadata
refresh, and a broker that auto-creates (Tansu always, Apache Kafka by default) would bring back
every reply topic whose client deleted it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaTimeoutError, TopicAuthorizationFailedError, UnknownTopicOrPartitionError
from aiokafka.protocol.metadata import MetadataRequest

from streamer.admin import admin_client, describe_topics, describe_without_creating, ensure_topics
from streamer.config import KafkaConfig
from streamer.kafka import make_consumer, start_consumer, start_producer
from streamer.transport.protocol import OffsetAndMetadata, RebalanceListener, Record, TopicPartition

DEFAULT_METADATA_WAIT_S = 2.0  # a topic the producer has no metadata for yet: the longest a send waits
DEFAULT_FORGET_IDLE_S = 30.0  # a topic not sent to this long leaves the producer's metadata refreshes


class KafkaTransport:
    def __init__(
        self,
        kafka: KafkaConfig,
        *,
        metadata_wait_s: float = DEFAULT_METADATA_WAIT_S,
        forget_idle_s: float = DEFAULT_FORGET_IDLE_S,
        metadata_max_age_ms: int | None = None,
    ) -> None:
        if metadata_wait_s <= 0 or forget_idle_s <= 0:
            raise ValueError("metadata_wait_s and forget_idle_s must be > 0")
        if metadata_max_age_ms is not None and metadata_max_age_ms <= 0:
            raise ValueError("metadata_max_age_ms must be > 0")
        self.kafka = kafka
        self._metadata_wait_s = metadata_wait_s
        self._forget_idle_s = forget_idle_s
        self._metadata_max_age_ms = metadata_max_age_ms  # None: aiokafka's 5 minutes

    def producer(self, *, linger_ms: int = 0) -> KafkaProducer:
        return KafkaProducer(
            self.kafka, linger_ms, self._metadata_wait_s,
            forget_idle_s=self._forget_idle_s, metadata_max_age_ms=self._metadata_max_age_ms,
        )

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
    def __init__(
        self,
        kafka: KafkaConfig,
        linger_ms: int,
        metadata_wait_s: float,
        *,
        forget_idle_s: float = DEFAULT_FORGET_IDLE_S,
        metadata_max_age_ms: int | None = None,
    ) -> None:
        self._kafka = kafka
        self._linger_ms = linger_ms
        self._producer: AIOKafkaProducer | None = None  # made by start
        self._metadata_wait_s = metadata_wait_s
        self._forget_idle_s = forget_idle_s
        self._metadata_max_age_ms = metadata_max_age_ms
        self._last_send_s: dict[str, float] = {}  # topic → when it was last sent to
        self._next_sweep_s = 0.0

    @property
    def tracked_topics(self) -> frozenset[str]:
        """The topics the producer's metadata refreshes ask for."""
        return frozenset(self._producer.client._topics)

    async def start(self) -> None:
        """Waits (START_RETRY) for a broker that is still coming up."""
        extra = {} if self._metadata_max_age_ms is None else {"metadata_max_age_ms": self._metadata_max_age_ms}
        self._producer = await start_producer(self._kafka, linger_ms=self._linger_ms, **extra)
        refuse_topic_auto_creation(self._producer.client)

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def send(
        self, topic: str, value: bytes | None, *, key: bytes | None = None, partition: int | None = None
    ) -> asyncio.Future[None]:
        now_s = time.monotonic()
        self._last_send_s[topic] = now_s
        if now_s >= self._next_sweep_s:
            self._forget_idle_topics(now_s)
        partitions = self._producer.client.cluster.partitions_for_topic(topic)
        if partitions and partition is not None and partition not in partitions:
            raise UnknownTopicOrPartitionError(f"{topic} has no partition {partition}")
        send = self._producer.send(topic, value, key=key, partition=partition)
        if partitions:
            return await send  # metadata known: send only appends to a batch
        try:
            return await asyncio.wait_for(send, self._metadata_wait_s)
        except (UnknownTopicOrPartitionError, TimeoutError, KafkaTimeoutError) as exc:
            error = await self._diagnose(topic, partition)
            if isinstance(error, UnknownTopicOrPartitionError | TopicAuthorizationFailedError):
                self._forget([topic])
            raise error from exc

    def _forget_idle_topics(self, now_s: float) -> None:
        self._next_sweep_s = now_s + min(1.0, self._forget_idle_s)
        idle = [t for t, sent_s in self._last_send_s.items() if now_s - sent_s > self._forget_idle_s]
        self._forget(idle)

    def _forget(self, topics: list[str]) -> None:
        """Stop asking the broker for these topics' metadata (a later send asks again)."""
        for topic in topics:
            self._last_send_s.pop(topic, None)
        client = self._producer.client
        remaining = set(client._topics).difference(topics)
        if remaining != client._topics:  # none left: refreshes ask for every topic, which creates none
            client.set_topics(remaining)

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

    async def end_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        found = await self._consumer.end_offsets(list(map(_kafka_tp, tps)))
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

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._consumer.seek(_kafka_tp(tp), offset)

    async def offsets_for_times(self, timestamp_ms: int) -> dict[TopicPartition, int | None]:
        if not self._tps:
            return {}
        found = await self._consumer.offsets_for_times({tp: timestamp_ms for tp in self._tps})
        return {
            TopicPartition(tp.topic, tp.partition): (hit.offset if hit is not None else None) for tp, hit in found.items()
        }


class KafkaAdmin:
    def __init__(self, admin: AIOKafkaAdminClient) -> None:
        self._admin = admin

    async def describe_topic(self, topic: str) -> dict:
        (entry,) = await describe_without_creating(self._admin, [topic])
        return entry


def refuse_topic_auto_creation(client: AIOKafkaClient) -> None:
    """Make every metadata request of `client` say `allow_auto_topic_creation=false`.

    aiokafka sends them with the flag set and has no option for it; this wraps the connections
    the client hands out, so the fix stays on this one client (aiokafka 0.14's `_get_conn`).
    """
    get_conn = client._get_conn

    async def get_refusing_conn(*args, **kwargs):
        conn = await get_conn(*args, **kwargs)
        if conn is not None and not getattr(conn, "_lorastream_refuses_auto_creation", False):
            send = conn.send

            def send_refusing(request, *send_args, **send_kwargs):
                if isinstance(request, MetadataRequest) and request._allow_auto_topic_creation is None:
                    request._allow_auto_topic_creation = False
                return send(request, *send_args, **send_kwargs)

            conn.send = send_refusing
            conn._lorastream_refuses_auto_creation = True
        return conn

    client._get_conn = get_refusing_conn


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
