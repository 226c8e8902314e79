"""A base's training lane and the release operator under the deployment's ACLs (issue 11 §3),
enforced by Apache Kafka: the trainer creates and reads lanes and joins their groups, tenants that
may train write lanes and read none, and the release operator writes the adapters topic only."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import GroupAuthorizationFailedError

from streamer import TopicSpec, ensure_topics, make_consumer, start_producer
from streamer.errors import TopicAdminError
from tests.security.conftest import SecuredDeployment
from tests.security.test_broker_acls import read_outcome, write_outcome

pytestmark = pytest.mark.kafka

BASE = "alpha"
TRAINER, RELEASER = "lorastream-trainer", "release-bot"

ROWS = [  # (user, action, topic role, expected); roles: "lane", "adapters", "training_requests"
    ("alice", "write", "lane", "allowed"),
    ("bob", "write", "lane", "denied"),  # may not train
    ("alice", "read", "lane", "denied"),
    (TRAINER, "read", "lane", "allowed"),
    ("lorastream-inference", "read", "lane", "denied"),
    (RELEASER, "write", "adapters", "allowed"),
    (RELEASER, "read", "adapters", "denied"),
    (RELEASER, "write", "training_requests", "denied"),
    (RELEASER, "write", "lane", "denied"),
]


@pytest.fixture(scope="module")
async def lane_topics(secured: SecuredDeployment) -> dict[str, str]:
    """The training lane (created by the trainer, as `train-worker --base-lane` does), the adapters
    and training-requests topics, each holding one record."""
    lane = secured.topics.training_requests_for(BASE)
    assert await ensure_topics(secured.config(TRAINER), [TopicSpec(lane, 2)]) == [lane]
    topics = {"lane": lane, "adapters": secured.topics.adapters, "training_requests": secured.topics.training_requests}
    producer = await start_producer(secured.admin)
    try:
        await asyncio.gather(*(producer.send_and_wait(t, b"seed", key=b"seed", partition=0) for t in topics.values()))
    finally:
        await producer.stop()
    return topics


@pytest.mark.parametrize(("user", "action", "role", "expected"), ROWS, ids=[f"{u}-{a}s-{r}" for u, a, r, _ in ROWS])
async def test_who_may_use_training_lanes_and_announce_releases(secured, lane_topics, user, action, role, expected):
    outcome = read_outcome if action == "read" else write_outcome
    assert await outcome(secured, user, lane_topics[role]) == expected


async def test_a_tenant_creates_no_training_lane(secured):
    with pytest.raises(TopicAdminError, match="Authorization failed"):
        await ensure_topics(secured.config("alice"), [TopicSpec(secured.topics.training_requests_for("beta"), 1)])


async def test_only_the_trainer_joins_a_training_lanes_group(secured, lane_topics):
    group = f"{secured.principals.training_group}.{BASE}"
    consumer = make_consumer(secured.config("alice"), lane_topics["lane"], group_id=group)
    try:
        with pytest.raises(GroupAuthorizationFailedError):
            await consumer.start()
            await asyncio.wait_for(consumer.getmany(timeout_ms=2000), 10)
    finally:
        await consumer.stop()
    trainer = make_consumer(secured.config(TRAINER), lane_topics["lane"], group_id=group)
    await trainer.start()  # the control: the trainer's principal joins it
    try:
        await asyncio.wait_for(trainer.getmany(timeout_ms=2000), 10)
    finally:
        await trainer.stop()
