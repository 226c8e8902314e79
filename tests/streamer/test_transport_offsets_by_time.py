"""What the answer look-back asks of a transport: offsets by time, seek, and a group's end offsets.
Run on the in-memory bus and, marked `kafka`, on Apache Kafka."""

from __future__ import annotations

import time
import uuid

import pytest

from streamer import KafkaConfig, TopicSpec
from streamer.transport import TopicPartition
from streamer.transport.kafka import KafkaTransport
from streamer.transport.memory import MemoryTransport


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.kafka)])
def transport(request):
    if request.param == "memory":
        return MemoryTransport()
    kafka = KafkaConfig(bootstrap_servers=request.getfixturevalue("kafka_bootstrap"), client_id="lorastream-tests")
    return KafkaTransport(kafka)


class NoListener:
    async def on_revoked(self, partitions) -> None:
        pass

    async def on_assigned(self, partitions) -> None:
        pass


async def test_offsets_for_times_find_the_first_record_at_or_after_a_time_and_seek_reads_from_there(transport):
    topic = f"t-{uuid.uuid4().hex[:10]}"
    await transport.ensure_topics([TopicSpec(topic, 2)])
    producer = transport.producer()
    await producer.start()
    before_ms = int(time.time() * 1000) - 1
    try:
        for i in range(3):
            await (await producer.send(topic, b"v%d" % i, partition=0))
    finally:
        await producer.stop()
    reader = transport.reader(topic)
    await reader.start()
    try:
        p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
        found = await reader.offsets_for_times(before_ms)
        assert found == {p0: 0, p1: None}  # p1 holds no record that recent
        assert (await reader.offsets_for_times(int(time.time() * 1000) + 60_000)) == {p0: None, p1: None}
        reader.seek(p0, 2)
        reader.seek(p1, 0)
        batch = await reader.poll(timeout_ms=5_000)
        assert [(r.offset, r.value) for r in batch.get(p0, [])] == [(2, b"v2")] and not batch.get(p1)
    finally:
        await reader.stop()
    consumer = transport.group_consumer([topic], group_id=f"g-{topic}", listener=NoListener())
    await consumer.start()
    try:
        assert await consumer.end_offsets([p0, p1]) == {p0: 3, p1: 0}
    finally:
        await consumer.stop()
