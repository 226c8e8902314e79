"""Issue 20's delivery rows through real Kafka: records that once stopped delivery for everyone,
or made the service write outside the reply lane. Good traffic runs alongside each; every good
request must be answered promptly and the service must keep running."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid

import msgspec
import pytest
from aiokafka import TopicPartition

from consumers.metrics import UNRESOLVED_LABEL
from schemas import DeadLetter, Error, ErrorCode, Final, decode, decode_reply
from streamer import LoraClient, describe_topics, ensure_topics, make_consumer, make_producer
from streamer.admin import TopicSpec, admin_client
from tests.integration.conftest import serving  # noqa: F401  (fixture)

pytestmark = pytest.mark.kafka


def _request(request_id: str, reply_topic: str | None, partition: int | None = 0, **fields) -> bytes:
    body = {"kind": "request", "request_id": request_id, "prompt": "hello", "params": {"max_new_tokens": 2}}
    if reply_topic is not None:
        body["reply_to"] = {"topic": reply_topic, "partition": partition}
    body.update(fields)
    return msgspec.json.encode(body)


async def _publish(kafka, topic: str, values: list[bytes], *, max_request_size: int = 1_048_576) -> None:
    producer = make_producer(kafka, max_request_size=max_request_size)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


async def _read(kafka, topic: str, until, timeout_s: float = 30.0) -> list:
    """Records of `topic` (key, value) from the start until `until(records)` or the timeout."""
    consumer = make_consumer(kafka, topic, auto_offset_reset="earliest", max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    records: list = []
    try:
        async with asyncio.timeout(timeout_s):
            while not until(records):
                batch = await consumer.getmany(timeout_ms=100)
                for part in batch.values():
                    records.extend((r.key, r.value) for r in part)
    except TimeoutError:
        pass
    finally:
        await consumer.stop()
    return records


def _results(records) -> dict[str, Final | Error]:
    """The last record (Final or Error) of each request among reply records."""
    return {r.request_id: r for r in (decode_reply(v) for _, v in records) if isinstance(r, Final | Error)}


async def _end_offsets(kafka, topic: str) -> dict[int, int]:
    [info] = await describe_topics(kafka, [topic])
    consumer = make_consumer(kafka)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(info.partitions)]
        return {tp.partition: off for tp, off in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


async def _timed_generate(kafka, topics, n: int = 3) -> float:
    """Seconds the slowest of n good requests took, end to end through a LoraClient."""
    async with LoraClient(config=kafka, topics=topics) as client:
        t0 = time.monotonic()
        finals = await asyncio.gather(*(client.generate(f"good {i}", max_new_tokens=2) for i in range(n)))
        elapsed = time.monotonic() - t0
    assert all(f.usage.completion_tokens >= 1 for f in finals)
    return elapsed


async def _wait_committed_to_end(kafka, topics, timeout_s: float = 20.0) -> None:
    ends = await _end_offsets(kafka, topics.requests)
    tps = [TopicPartition(topics.requests, p) for p in ends]
    async with admin_client(kafka) as admin:
        deadline = time.monotonic() + timeout_s
        while True:
            committed = await admin.list_consumer_group_offsets("lorastream-inference", partitions=tps)
            behind = {tp.partition: (committed[tp].offset if tp in committed else -1) for tp in tps
                      if (committed[tp].offset if tp in committed else -1) < ends[tp.partition]}
            if not behind:
                return
            assert time.monotonic() < deadline, f"commits stalled: {behind} vs ends {ends}"
            await asyncio.sleep(0.2)


async def test_a_900kb_record_cannot_wedge_delivery(serving, report_counts):
    kafka, topics, service = serving
    poison = b"\x00not json " + bytes(900_000)
    await _publish(kafka, topics.requests, [poison], max_request_size=2 * 1024 * 1024)
    elapsed = await _timed_generate(kafka, topics)
    letters = [decode(v, DeadLetter) for _, v in await _read(kafka, topics.requests_dlq, lambda r: len(r) >= 1)]
    assert len(letters) == 1
    (letter,) = letters
    assert letter.code is ErrorCode.MALFORMED and letter.truncated
    assert letter.original_bytes == len(poison) and letter.original_sha256 == hashlib.sha256(poison).hexdigest()
    await _wait_committed_to_end(kafka, topics)
    assert not service.stalled_partitions
    report_counts(f"900 KB record: dead letter truncated to {len(letter.original)} B, good requests answered in {elapsed:.2f} s")
    assert elapsed < 10.0


async def test_a_huge_deadline_is_refused_not_fatal(serving, report_counts):
    kafka, topics, service = serving
    reply = f"{topics.prefix}.replies.huge-{uuid.uuid4().hex[:6]}"
    await ensure_topics(kafka, [TopicSpec(reply, partitions=1)])
    await _publish(kafka, topics.requests, [_request("huge-deadline", reply, deadline_ms=int("9" * 400))])
    errors = _results(await _read(kafka, reply, lambda r: len(_results(r)) >= 1))
    assert errors["huge-deadline"].code is ErrorCode.INVALID_REQUEST
    await _timed_generate(kafka, topics)
    await _wait_committed_to_end(kafka, topics)
    report_counts("400-digit deadline: refused invalid_request, service alive")


async def test_replies_only_go_to_reply_topics(serving, report_counts):
    kafka, topics, service = serving
    own = [topics.requests, topics.adapters, topics.results, topics.control, topics.requests_dlq]
    outside = f"{topics.prefix}.elsewhere"
    await ensure_topics(kafka, [TopicSpec(outside, partitions=1)])
    before = {t: await _end_offsets(kafka, t) for t in [topics.adapters, topics.control, outside]}
    bad = [(f"lane-{i}", topic) for i, topic in enumerate([*own, outside])]
    await _publish(kafka, topics.requests, [_request(rid, topic) for rid, topic in bad])
    await _timed_generate(kafka, topics)
    results = _results(await _read(kafka, topics.results, lambda r: len(_results(r)) >= len(bad) + 3))
    for rid, _ in bad:
        assert results[rid].code is ErrorCode.REPLY_TOPIC_REFUSED, results[rid]
    for topic, ends in before.items():
        assert await _end_offsets(kafka, topic) == ends, f"something was written to {topic}"
    requests = [decode_reply(v) for _, v in await _read(kafka, topics.requests, lambda r: False, timeout_s=1)
                if b'"kind":"final"' in v or b'"kind":"error"' in v]
    assert requests == []
    letters = [decode(v, DeadLetter) for _, v in await _read(kafka, topics.requests_dlq, lambda r: len(r) >= len(bad))]
    assert sorted(letter.request_id for letter in letters) == sorted(rid for rid, _ in bad)
    report_counts(f"reply_to outside the lane: {len(bad)} refused (reply_topic_refused), 0 records written there")


async def test_missing_reply_topics_delay_only_themselves(serving, report_counts):
    kafka, topics, service = serving
    await _timed_generate(kafka, topics, n=1)  # warm: model and client paths
    baseline = await _timed_generate(kafka, topics)
    missing = [(f"missing-{i}", f"{topics.prefix}.replies.nobody-{i}", 0) for i in range(5)]
    existing = f"{topics.prefix}.replies.two-{uuid.uuid4().hex[:6]}"
    await ensure_topics(kafka, [TopicSpec(existing, partitions=2)])
    bad_partition = ("bad-partition", existing, 9)
    good_partition = ("good-partition", existing, 1)
    await _publish(kafka, topics.requests, [_request(rid, t, p) for rid, t, p in [*missing, bad_partition]])
    with_bad = await _timed_generate(kafka, topics)
    await _publish(kafka, topics.requests, [_request(*good_partition)])
    replies = _results(await _read(kafka, existing, lambda r: len(_results(r)) >= 1))
    assert isinstance(replies["good-partition"], Final)  # one bad partition number spoils nothing else
    results = _results(await _read(kafka, topics.results, lambda r: len(_results(r)) >= 6 + 4 + 1))
    for rid, _, _ in [*missing, bad_partition]:
        assert results[rid].code is ErrorCode.REPLY_TOPIC_NOT_FOUND, results[rid]
    await _wait_committed_to_end(kafka, topics)
    report_counts(
        f"missing reply topics: {len(missing)} + 1 bad partition refused (reply_topic_not_found); "
        f"good requests {baseline:.2f} s alone, {with_bad:.2f} s with them"
    )
    assert with_bad < baseline + 3.0


async def test_random_adapter_ids_share_one_metric_label(serving, report_counts):
    kafka, topics, service = serving
    n = 300
    ids = [f"random/{uuid.uuid4().hex}" for _ in range(n)]
    await _publish(kafka, topics.requests, [_request(f"rand-{i}", None, adapter_id=a) for i, a in enumerate(ids)])
    await _timed_generate(kafka, topics)
    results = _results(await _read(kafka, topics.results, lambda r: len(_results(r)) >= n + 3, timeout_s=60))
    assert sum(1 for r in results.values() if isinstance(r, Error) and r.code is ErrorCode.ADAPTER_NOT_FOUND) == n
    scrape = service.metrics.render().decode()
    assert not [line for line in scrape.splitlines() if any(a in line for a in ids)][:3]
    assert f'lorastream_requests_total{{adapter="{UNRESOLVED_LABEL}"}} {float(n)}' in scrape
    series = sum(1 for line in scrape.splitlines() if line.startswith("lorastream_requests_total{"))
    report_counts(f"{n} random adapter ids: {series} lorastream_requests series, none named after an id")
    assert series <= 2


async def test_a_900kb_record_on_the_embedded_broker_with_defaults(tiny_model, report_counts):
    """The issue's acceptance check: Tansu (what `make demo` runs), default settings everywhere."""
    from consumers.config import ServeConfig
    from consumers.inference import InferenceService
    from streamer.transport.kafka import KafkaTransport
    from consumers.serve import build_engine_thread
    from streamer import KafkaConfig, TansuBroker, TopicNames

    model_dir, adapter_root = tiny_model
    async with TansuBroker() as broker:
        kafka, topics = KafkaConfig(broker.bootstrap_servers), TopicNames(f"t-{uuid.uuid4().hex[:8]}")
        runner = build_engine_thread(model_path=str(model_dir), adapter_root=str(adapter_root), device="cpu")
        service = InferenceService(KafkaTransport(kafka), topics, ServeConfig(), runner)
        task = asyncio.create_task(service.run())
        try:
            await asyncio.wait_for(service.ready.wait(), 60)
            async with LoraClient(config=kafka, topics=topics) as client:
                await client.generate("warm", max_new_tokens=2)
                await _publish(kafka, topics.requests, [b"\xff" * 900_000], max_request_size=2 * 1024 * 1024)
                t0 = time.monotonic()
                final = await client.generate("good after poison", max_new_tokens=2)
                elapsed = time.monotonic() - t0
            assert final.usage.completion_tokens >= 1
            letters = await _read(kafka, topics.requests_dlq, lambda r: len(r) >= 1, timeout_s=10)
            assert len(letters) == 1 and decode(letters[0][1], DeadLetter).truncated
            assert not task.done()
        finally:
            service.stop()
            await asyncio.wait_for(task, 60)
    report_counts(f"embedded broker, 900 KB record then a good request: answered in {elapsed:.2f} s")
    assert elapsed < 2.0
