"""The deployment's ACLs, enforced by Apache Kafka's StandardAuthorizer: every row says what one
principal tries on one topic and what the broker lets it do. Rows the broker must allow are the
controls that show a refusal is the ACL's doing, not the test's."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError

from streamer import build_training_request, ensure_topics, make_consumer, reply_topic_spec, start_producer, submit_training
from streamer.admin import admin_client
from streamer.brokers import probe_metadata
from streamer.acls import AclError, Tenant, create_acls, lorastream_acls
from streamer.errors import TopicAdminError
from tests.security.conftest import OUTSIDER, SecuredDeployment, make_topic

pytestmark = pytest.mark.kafka

_READ_WINDOW_S = 2.0  # a reader the broker lets in gets the seeded record within milliseconds
_TOPIC_AUTHORIZATION_FAILED = TopicAuthorizationFailedError.errno

# the topic a row names: a role of TopicNames, or a reply topic "replies:<owner>"
READS = [
    ("alice", "replies:bob", "denied"),
    ("alice", "replies:carol", "denied"),
    ("alice", "requests", "denied"),
    ("alice", "results", "denied"),
    ("alice", "requests_dlq", "denied"),
    ("alice", "adapters", "denied"),
    ("bob", "training_events", "denied"),  # bob may not fine-tune
    ("bob", "replies:bob", "allowed"),
    ("alice", "training_events", "allowed"),
    ("lorastream-inference", "requests", "allowed"),
    ("lorastream-inference", "replies:bob", "denied"),  # the service writes replies, never reads them
    ("ops", "requests_dlq", "allowed"),
    ("ops", "results", "allowed"),
]
WRITES = [
    ("alice", "adapters", "denied"),
    ("lorastream-inference", "adapters", "denied"),
    ("ops", "adapters", "denied"),
    ("lorastream-trainer", "adapters", "allowed"),
    ("alice", "results", "denied"),
    ("alice", "requests_dlq", "denied"),
    ("alice", "training_events", "denied"),
    ("alice", "replies:bob", "denied"),
    ("alice", "replies:alice", "allowed"),  # its clients' liveness heartbeats; answers are told apart by reply_token
    ("bob", "training_requests", "denied"),
    ("alice", "training_requests", "allowed"),
    ("alice", "requests", "allowed"),
    ("bob", "control", "allowed"),
    ("lorastream-inference", "replies:bob", "allowed"),
    ("lorastream-inference", "replies:carol", "denied"),
    ("lorastream-inference", "requests", "denied"),
]


@pytest.fixture(scope="module")
def outcomes(report_counts):
    """Counts of what the broker allowed and refused, reported once the module is done."""
    counts: Counter[str] = Counter()
    yield counts
    report_counts("broker ACLs: " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))


@pytest.fixture(scope="module")
async def seeded(secured: SecuredDeployment) -> dict[str, str]:
    """Every topic the rows name, each holding one record; role → topic name."""
    topics = {
        role: getattr(secured.topics, role)
        for role in ("requests", "results", "requests_dlq", "adapters", "control", "training_requests", "training_events")
    }
    for owner in ("alice", "bob", OUTSIDER):
        topics[f"replies:{owner}"] = await make_topic(secured, secured.reply_topic(owner))
    producer = await start_producer(secured.admin)
    try:
        await asyncio.gather(*(producer.send_and_wait(t, b"seed", key=b"seed") for t in topics.values()))
    finally:
        await producer.stop()
    return topics


async def read_outcome(secured: SecuredDeployment, user: str, topic: str) -> str:
    """"allowed" when `user` gets the seeded record; "denied" when the broker refuses the fetch, or
    hides the topic (aiokafka then waits for it silently) and no record arrives."""
    consumer = make_consumer(secured.config(user))
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek(TopicPartition(topic, 0), 0)
        async with asyncio.timeout(_READ_WINDOW_S):
            while not await consumer.getmany(timeout_ms=100):
                pass
        return "allowed"
    except TopicAuthorizationFailedError:
        return "denied"
    except TimeoutError:
        async with admin_client(secured.config(user)) as admin:
            [described] = await admin.describe_topics([topic])
        return "denied" if described["error_code"] == _TOPIC_AUTHORIZATION_FAILED else "nothing"
    finally:
        await consumer.stop()


async def write_outcome(secured: SecuredDeployment, user: str, topic: str) -> str:
    producer = await start_producer(secured.config(user))
    try:
        await asyncio.wait_for(producer.send_and_wait(topic, b"probe", key=b"probe"), 10)
        return "allowed"
    except TopicAuthorizationFailedError:
        return "denied"
    finally:
        await producer.stop()


@pytest.mark.parametrize(("user", "role", "expected"), READS, ids=[f"{u}-reads-{r}" for u, r, _ in READS])
async def test_who_reads_what(secured, seeded, outcomes, user, role, expected):
    assert await read_outcome(secured, user, seeded[role]) == expected
    outcomes[f"read {expected}"] += 1


@pytest.mark.parametrize(("user", "role", "expected"), WRITES, ids=[f"{u}-writes-{r}" for u, r, _ in WRITES])
async def test_who_writes_what(secured, seeded, outcomes, user, role, expected):
    assert await write_outcome(secured, user, seeded[role]) == expected
    outcomes[f"write {expected}"] += 1


async def test_tenants_create_reply_topics_only_under_their_own_prefix(secured, outcomes):
    alice = secured.config("alice")
    own = secured.reply_topic("alice")
    assert await ensure_topics(alice, [reply_topic_spec(own)]) == [own]
    for name in (secured.reply_topic("bob"), f"{secured.topics.prefix}.replies.x", f"{secured.topics.prefix}.adapters2"):
        with pytest.raises(TopicAdminError, match="Authorization failed"):
            await ensure_topics(alice, [reply_topic_spec(name)])
    outcomes["create denied"] += 3
    outcomes["create allowed"] += 1


async def test_tenant_cannot_join_the_service_group(secured, seeded, outcomes):
    """Joining "lorastream-inference" would hand a tenant the service's request partitions."""
    consumer = make_consumer(secured.config("alice"), seeded["requests"], group_id=secured.principals.inference_group)
    try:
        with pytest.raises(GroupAuthorizationFailedError):
            await consumer.start()
            await asyncio.wait_for(consumer.getmany(timeout_ms=2000), 10)
    finally:
        await consumer.stop()
    outcomes["join denied"] += 1


async def test_tenant_cannot_grant_itself_rights(secured, outcomes):
    """Only the super user creates ACLs: bob asking for a training tenant's rights is refused."""
    principals = dataclasses.replace(secured.principals, tenants=(Tenant("bob", may_train=True),))
    with pytest.raises(AclError, match="needs ALTER permission"):
        await create_acls(secured.config("bob"), lorastream_acls(secured.topics, principals))
    assert await write_outcome(secured, "bob", secured.topics.training_requests) == "denied"
    outcomes["grant denied"] += 1


async def test_training_tenant_submits_a_job(secured, outcomes):
    request = build_training_request("alice/notes", "s3://datasets/alice/notes.jsonl", max_steps=1)
    job = await submit_training(secured.config("alice"), secured.topics, request)
    await job.close()
    trainer = make_consumer(secured.config(secured.principals.trainer))
    await trainer.start()
    try:
        tps = [TopicPartition(secured.topics.training_requests, p) for p in range(2)]
        trainer.assign(tps)
        await trainer.seek_to_beginning(*tps)
        keys: list[bytes] = []
        async with asyncio.timeout(10):
            while request.job_id.encode() not in keys:
                keys += [r.key for records in (await trainer.getmany(timeout_ms=200)).values() for r in records]
    finally:
        await trainer.stop()
    outcomes["training submit allowed"] += 1


async def test_unauthenticated_and_wrong_password_clients_are_refused(secured_broker, outcomes):
    assert not await probe_metadata(secured_broker.bootstrap_servers)
    wrong = {**secured_broker.client_kwargs(), "sasl_plain_password": "not-the-password"}
    assert not await probe_metadata(secured_broker.bootstrap_servers, **wrong)
    assert await probe_metadata(secured_broker.bootstrap_servers, **secured_broker.client_kwargs())
    outcomes["login denied"] += 2
