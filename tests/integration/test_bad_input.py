"""200 malformed messages interleaved with 50 good ones: every good one is answered, every bad
one lands in the dead-letter topic with its reason, and parseable senders get an Error."""

from __future__ import annotations

import asyncio
import random
import uuid

import msgspec
import pytest

from schemas import DeadLetter, Error, ErrorCode, Final, decode, decode_reply
from streamer import describe_topics, ensure_topics, make_consumer, make_producer
from aiokafka import TopicPartition

from streamer.admin import TopicSpec, admin_client

pytestmark = pytest.mark.kafka


def _request(request_id: str, reply_topic: str, **fields) -> dict:
    body = {
        "kind": "request",
        "request_id": request_id,
        "prompt": "hello there",
        "params": {"max_new_tokens": 3},
        "reply_to": {"topic": reply_topic, "partition": 0},
    }
    body.update(fields)
    return body


def _malformed(rng: random.Random, reply_topic: str, scale: int) -> list[tuple[bytes, str | None, ErrorCode]]:
    """200 × scale of (bytes, request_id the sender can be told under or None, expected code)."""
    enc = msgspec.json.encode
    out = []
    for _ in range(40 * scale):
        out.append((bytes(rng.randrange(256) for _ in range(rng.randint(0, 64))), None, None))
    for i in range(40 * scale):
        rid = f"badtype-{i}"
        field, value = [("prompt", 42), ("params", "fast"), ("priority", "high"), ("stream", [1])][i % 4]
        out.append((enc(_request(rid, reply_topic, **{field: value})), rid, ErrorCode.INVALID_REQUEST))
    for i in range(40 * scale):
        rid = f"missing-{i}"
        body = _request(rid, reply_topic)
        del body["prompt"]
        out.append((enc(body), rid, ErrorCode.INVALID_REQUEST))
    for i in range(40 * scale):
        rid = f"unknown-{i}"
        out.append((enc(_request(rid, reply_topic, adapter_id=f"nobody/ad-{i}")), rid, ErrorCode.ADAPTER_NOT_FOUND))
    for i in range(20 * scale):
        rid = f"oversize-{i}"
        out.append((enc(_request(rid, reply_topic, prompt="x" * 70_000)), rid, ErrorCode.INVALID_REQUEST))
    for i in range(20 * scale):
        rid = f"traversal-{i}"
        out.append((enc(_request(rid, reply_topic, adapter_id=f"../../etc/{i}")), rid, ErrorCode.INVALID_REQUEST))
    return out


async def _collect(kafka, topic: str, done, timeout_s: float) -> list[bytes]:
    """Records of `topic` from the start until `done(values)` holds or the timeout passes."""
    consumer = make_consumer(kafka, topic, auto_offset_reset="earliest")
    await consumer.start()
    values: list[bytes] = []
    try:
        async with asyncio.timeout(timeout_s):
            while not done(values):
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    values.extend(r.value for r in records)
    except TimeoutError:
        pass
    finally:
        await consumer.stop()
    return values


@pytest.mark.parametrize(("scale", "num_good"), [(1, 50), (5, 100)], ids=["200bad-50good", "1000bad-100good"])
async def test_malformed_interleaved_with_good(serving, scale, num_good):
    kafka, topics, service = serving
    reply_topic = f"{topics.prefix}.replies.test-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka, [TopicSpec(reply_topic, partitions=1)])
    rng = random.Random(1234)
    bad = _malformed(rng, reply_topic, scale)
    good_ids = [f"good-{i}" for i in range(num_good)]
    messages = [(msgspec.json.encode(_request(rid, reply_topic, adapter_id=[None, "acme/sentiment", "acme/summary"][i % 3])), rid, None) for i, rid in enumerate(good_ids)]
    messages += bad
    rng.shuffle(messages)

    producer = make_producer(kafka)
    await producer.start()
    try:
        for raw, _, _ in messages:
            await producer.send(topics.requests, raw, key=str(rng.randrange(8)).encode())
        await producer.flush()
    finally:
        await producer.stop()

    expected_errors = {rid: code for _, rid, code in bad if rid is not None}

    def all_answered(values: list[bytes]) -> bool:
        last = [r for r in map(decode_reply, values) if isinstance(r, (Final, Error))]
        return len(last) >= len(good_ids) + len(expected_errors)

    replies = await _collect(kafka, reply_topic, all_answered, timeout_s=120)
    finals, errors = {}, {}
    for value in replies:
        record = decode_reply(value)
        if isinstance(record, Final):
            finals[record.request_id] = record
        elif isinstance(record, Error):
            errors[record.request_id] = record
    assert set(finals) == set(good_ids), f"missing finals: {set(good_ids) - set(finals)}"
    assert set(errors) == set(expected_errors)
    for rid, code in expected_errors.items():
        assert errors[rid].code is code, (rid, errors[rid])
        assert errors[rid].message

    letters = [decode(v, DeadLetter) for v in await _collect(kafka, topics.requests_dlq, lambda v: len(v) >= len(bad), timeout_s=60)]
    assert len(letters) == len(bad) == 200 * scale
    assert sorted(l.original for l in letters) == sorted(raw for raw, _, _ in bad)
    assert all(l.reason and l.source_topic == topics.requests for l in letters)
    by_id = {l.request_id: l for l in letters if l.request_id}
    for rid, code in expected_errors.items():
        assert by_id[rid].code is code

    # no partition stalls: the group's committed offsets reach the end of every request partition
    [info] = await describe_topics(kafka, [topics.requests])
    partitions = [TopicPartition(topics.requests, p) for p in range(info.partitions)]
    consumer = make_consumer(kafka)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    async with admin_client(kafka) as admin, asyncio.timeout(30):
        while True:
            committed = await admin.list_consumer_group_offsets(service.config.group_id, partitions=partitions)
            if all(committed.get(tp) is not None and committed[tp].offset == ends[tp] for tp in partitions):
                break
            await asyncio.sleep(0.1)  # commits happen on an interval; nothing to wait on but time
