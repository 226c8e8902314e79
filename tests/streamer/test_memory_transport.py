"""MemoryTransport behaves like a broker where the services can tell: partitioning, groups,
rebalances, committed offsets, readers and the failures a send can meet."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import (
    CommitFailedError,
    KafkaConnectionError,
    MessageSizeTooLargeError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)
from aiokafka.partitioner import murmur2

from streamer.transport import OffsetAndMetadata, TopicPartition
from streamer.transport.memory import MemoryTransport


class Listener:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[TopicPartition]]] = []

    async def on_revoked(self, partitions) -> None:
        self.calls.append(("revoked", list(partitions)))

    async def on_assigned(self, partitions) -> None:
        self.calls.append(("assigned", list(partitions)))


def tps(topic: str, *partitions: int) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for p in partitions]


@pytest.mark.parametrize("key", [b"a", b"adapter-7", b"\x00\xff", b"x" * 100])
async def test_a_keyed_record_lands_where_kafka_puts_it(key):
    bus = MemoryTransport()
    bus.create_topic("t", 7)
    producer = bus.producer()
    await producer.start()
    await (await producer.send("t", b"v", key=key))
    (record,) = bus.records("t")
    assert record.tp.partition == (murmur2(key) & 0x7FFFFFFF) % 7


@pytest.mark.parametrize(
    ("set_up", "send", "error"),
    [
        (lambda bus: None, dict(topic="missing"), UnknownTopicOrPartitionError),
        (lambda bus: None, dict(topic="t", partition=2), UnknownTopicOrPartitionError),
        (lambda bus: bus.deny_writes("t"), dict(topic="t"), TopicAuthorizationFailedError),
        (lambda bus: None, dict(topic="t", value=b"x" * 101), MessageSizeTooLargeError),
        (lambda bus: bus.fail_sends("t", KafkaConnectionError(), times=1), dict(topic="t"), KafkaConnectionError),
    ],
    ids=["no-topic", "no-partition", "not-authorized", "too-large", "injected"],
)
async def test_send_failures_are_the_brokers_exceptions(set_up, send, error):
    bus = MemoryTransport(max_record_bytes=100)
    bus.create_topic("t", 2)
    set_up(bus)
    producer = bus.producer()
    await producer.start()
    with pytest.raises(error):
        await producer.send(send["topic"], send.get("value", b"v"), partition=send.get("partition"))
    assert bus.records("t") == []


async def test_injected_failures_run_out():
    bus = MemoryTransport()
    bus.create_topic("t")
    bus.fail_sends("t", KafkaConnectionError(), times=2)
    producer = bus.producer()
    await producer.start()
    for _ in range(2):
        with pytest.raises(KafkaConnectionError):
            await producer.send("t", b"v")
    await (await producer.send("t", b"v"))
    assert [r.value for r in bus.records("t")] == [b"v"]


@pytest.mark.parametrize(
    ("topic", "expected"),
    [("t", (0, 3)), ("missing", (3, 0)), ("secret", (29, 0))],
)
async def test_describe_topic_answers_like_the_admin_client(topic, expected):
    bus = MemoryTransport()
    bus.create_topic("t", 3)
    bus.create_topic("secret", 1)
    bus.deny_writes("secret", describe=True)
    async with bus.admin() as admin:
        entry = await admin.describe_topic(topic)
    assert (entry["error_code"], len(entry["partitions"])) == expected


@pytest.mark.parametrize(
    ("num_partitions", "num_members", "shares"),
    [(4, 1, [4]), (4, 2, [2, 2]), (5, 2, [3, 2]), (2, 3, [1, 1, 0]), (7, 3, [3, 2, 2])],
)
async def test_range_assignment(num_partitions, num_members, shares):
    bus = MemoryTransport()
    bus.create_topic("t", num_partitions)
    members = [bus.group_consumer(["t"], group_id="g", listener=Listener()) for _ in range(num_members)]
    for m in members:
        await m.start()
    await asyncio.gather(*(m.poll(timeout_ms=50) for m in members))
    assert [len(m.assignment()) for m in members] == shares
    owned = [tp for m in members for tp in sorted(m.assignment())]
    assert owned == tps("t", *range(num_partitions))  # contiguous runs, nothing owned twice


async def test_a_join_revokes_then_assigns_and_positions_resume_at_the_commit():
    bus = MemoryTransport()
    bus.create_topic("t", 2)
    producer = bus.producer()
    await producer.start()
    for p in (0, 1):
        for i in range(3):
            await producer.send("t", b"%d" % i, partition=p)
    first_listener = Listener()
    first = bus.group_consumer(["t"], group_id="g", listener=first_listener)
    await first.start()
    batch = await first.poll(timeout_ms=50)
    assert {tp: len(rs) for tp, rs in batch.items()} == {TopicPartition("t", 0): 3, TopicPartition("t", 1): 3}
    await first.commit({TopicPartition("t", 1): OffsetAndMetadata(2, "epoch=1")})

    second_listener = Listener()
    second = bus.group_consumer(["t"], group_id="g", listener=second_listener)
    await second.start()
    assert await second.poll(timeout_ms=10) == {}  # the barrier: the first has not revoked yet
    assert second.assignment() == frozenset()
    await first.poll(timeout_ms=10)
    batch = await second.poll(timeout_ms=50)
    assert first_listener.calls == [
        ("revoked", []), ("assigned", tps("t", 0, 1)), ("revoked", tps("t", 0, 1)), ("assigned", tps("t", 0)),
    ]
    assert second_listener.calls == [("revoked", []), ("assigned", tps("t", 1))]
    assert [r.offset for r in batch[TopicPartition("t", 1)]] == [2]  # from the committed offset
    assert await second.committed(tps("t", 1)) == {TopicPartition("t", 1): OffsetAndMetadata(2, "epoch=1")}
    with pytest.raises(CommitFailedError):  # no longer the owner
        await first.commit({TopicPartition("t", 1): OffsetAndMetadata(3)})

    await second.stop()  # leaving gives its partitions back
    await first.poll(timeout_ms=50)
    assert first.assignment() == frozenset(tps("t", 0, 1))


async def test_pause_resume_and_seek():
    bus = MemoryTransport()
    bus.create_topic("t", 1)
    producer = bus.producer()
    await producer.start()
    member = bus.group_consumer(["t"], group_id="g", listener=Listener())
    await member.start()
    await member.poll(timeout_ms=10)
    (tp,) = member.assignment()
    member.pause(tp)
    await producer.send("t", b"a")
    assert await member.poll(timeout_ms=10) == {}
    assert member.highwater(tp) == 1
    member.resume(tp)
    assert [r.value for r in (await member.poll(timeout_ms=10))[tp]] == [b"a"]
    member.seek(tp, 0)
    assert [r.offset for r in (await member.poll(timeout_ms=10))[tp]] == [0]


async def test_a_poll_wakes_on_a_send_not_on_its_timeout():
    bus = MemoryTransport()
    bus.create_topic("t", 1)
    producer = bus.producer()
    await producer.start()
    reader = bus.reader("t")
    await reader.start()
    polled = asyncio.create_task(reader.poll(timeout_ms=60_000))
    await asyncio.sleep(0)
    await producer.send("t", b"now")
    batch = await asyncio.wait_for(polled, 1.0)
    assert [r.value for rs in batch.values() for r in rs] == [b"now"]


@pytest.mark.parametrize(("from_beginning", "expected"), [(True, [b"old", b"new"]), (False, [b"new"])])
async def test_readers_from_beginning_or_end(from_beginning, expected):
    bus = MemoryTransport()
    bus.create_topic("t", 2)
    producer = bus.producer()
    await producer.start()
    await producer.send("t", b"old", partition=1)
    reader = bus.reader("t")
    await reader.start()
    await (reader.seek_to_beginning() if from_beginning else reader.seek_to_end())
    assert await reader.end_offsets() == {TopicPartition("t", 0): 0, TopicPartition("t", 1): 1}
    await producer.send("t", b"new", partition=1)
    batch = await reader.poll(timeout_ms=10)
    assert [r.value for r in batch[TopicPartition("t", 1)]] == expected
