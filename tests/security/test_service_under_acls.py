"""The inference service, running as its own principal under the deployment's ACLs, keeps answering
tenant alice while tenant bob's requests name reply topics the broker will not let it write to:
each refused request ends as a dead letter coded reply_not_authorized, no answer lands where the
ACLs forbid, nothing exits and every request offset is committed."""

from __future__ import annotations

import asyncio
import time
import uuid

import msgspec
import pytest
from aiokafka import TopicPartition

from consumers.config import ServeConfig
from consumers.inference import InferenceService
from streamer.transport.kafka import KafkaTransport
from consumers.serve import build_engine_thread
from schemas import DeadLetter, ErrorCode, InferenceRequest, ReplyAddress, SamplingParams, encode
from streamer import LoraClient, describe_topics, make_consumer, start_producer
from streamer.admin import admin_client
from tests.security.conftest import OUTSIDER, SecuredDeployment, make_topic

pytestmark = pytest.mark.kafka

NUM_GOOD = 12
NUM_REFUSED = 12  # half to an existing outsider's topic, half to topics that do not exist
MAX_GOOD_LATENCY_S = 10.0  # one good request alone takes well under a second on the tiny model


@pytest.fixture
async def service(secured: SecuredDeployment, tiny_model):
    model_dir, adapter_root = tiny_model
    runner = build_engine_thread(model_path=str(model_dir), adapter_root=str(adapter_root), device="cpu")
    kafka = secured.config(secured.principals.inference)
    service = InferenceService(KafkaTransport(kafka), secured.topics, ServeConfig(request_partitions=2), runner)
    task = asyncio.create_task(service.run())
    ready = asyncio.create_task(service.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises the start-up error
    assert ready in done, "inference service did not become ready in 60 s"
    yield service, task
    service.stop()
    await asyncio.wait_for(task, 60)


async def _collect(secured: SecuredDeployment, user: str, topic: str, done, timeout_s: float) -> list[bytes]:
    consumer = make_consumer(secured.config(user))
    await consumer.start()
    values: list[bytes] = []
    try:
        [info] = await describe_topics(secured.admin, [topic])
        consumer.assign([TopicPartition(topic, p) for p in range(info.partitions)])
        await consumer.seek_to_beginning()
        async with asyncio.timeout(timeout_s):
            while not done(values):
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    values += [r.value for r in records]
    except TimeoutError:
        pass
    finally:
        await consumer.stop()
    return values


async def test_service_answers_alice_while_acls_refuse_bobs_reply_topics(secured, service, report_counts):
    inference, task = service
    topics = secured.topics
    outsider_topic = await make_topic(secured, secured.reply_topic(OUTSIDER))
    refused = {
        f"refused-{i}": outsider_topic if i % 2 == 0 else secured.reply_topic(OUTSIDER)
        for i in range(NUM_REFUSED)
    }
    async def bob_sends() -> None:
        bob = await start_producer(secured.config("bob"))
        try:
            for request_id, reply_topic in refused.items():
                request = InferenceRequest(
                    request_id=request_id,
                    prompt="route this elsewhere",
                    adapter_id="acme/sentiment",
                    params=SamplingParams(max_new_tokens=3),
                    reply_to=ReplyAddress(reply_topic, 0),
                )
                await bob.send_and_wait(topics.requests, encode(request), key=request_id.encode())
        finally:
            await bob.stop()

    async with LoraClient(
        config=secured.config("alice"), topics=topics, client_id=f"alice.{uuid.uuid4().hex[:8]}"
    ) as alice:

        async def alice_asks(i: int) -> float:
            await asyncio.sleep(0.01 * i)  # spread among bob's records
            started_s = time.monotonic()
            final = await alice.generate(
                f"hello {i}", ["acme/sentiment", "acme/summary", None][i % 3], max_new_tokens=3, timeout_s=60
            )
            assert final.usage.completion_tokens > 0
            return time.monotonic() - started_s

        _, *latencies_s = await asyncio.gather(bob_sends(), *(alice_asks(i) for i in range(NUM_GOOD)))

    def all_refused(values: list[bytes]) -> bool:
        return len({d.request_id for d in map(_dead_letter, values)} & refused.keys()) == NUM_REFUSED

    letters = [_dead_letter(v) for v in await _collect(secured, "ops", topics.requests_dlq, all_refused, 60)]
    codes = {d.request_id: d.code for d in letters if d.request_id in refused}
    landed = await _collect(secured, "admin", outsider_topic, lambda v: False, 1.0)
    committed_all = await _committed_to_end(secured, inference.config.group_id)
    report_counts(
        f"service under ACLs: good answered {len(latencies_s)}/{NUM_GOOD} (max {max(latencies_s):.2f} s), "
        f"refused replies dead-lettered {sum(c is ErrorCode.REPLY_NOT_AUTHORIZED for c in codes.values())}/{NUM_REFUSED}, "
        f"records in the refused topic {len(landed)}, service exited {task.done()}, committed to end {committed_all}"
    )
    assert not task.done()
    assert max(latencies_s) < MAX_GOOD_LATENCY_S, latencies_s
    assert codes == dict.fromkeys(refused, ErrorCode.REPLY_NOT_AUTHORIZED)
    assert landed == []
    assert committed_all


def _dead_letter(value: bytes) -> DeadLetter:
    return msgspec.json.decode(value, type=DeadLetter)


async def _committed_to_end(secured: SecuredDeployment, group_id: str, timeout_s: float = 30.0) -> bool:
    """Whether the service's group commits every request partition up to its end (as operator)."""
    ops = secured.config("ops")
    [info] = await describe_topics(ops, [secured.topics.requests])
    partitions = [TopicPartition(secured.topics.requests, p) for p in range(info.partitions)]
    consumer = make_consumer(ops)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    async with admin_client(ops) as admin:
        deadline_s = time.monotonic() + timeout_s
        while time.monotonic() < deadline_s:
            committed = await admin.list_consumer_group_offsets(group_id, partitions=partitions)
            if all(committed.get(tp) is not None and committed[tp].offset == ends[tp] for tp in partitions):
                return True
            await asyncio.sleep(0.2)
    return False
