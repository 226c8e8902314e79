"""A base's lane and the catalogue under the deployment's ACLs (issue 11), enforced by Apache Kafka:
tenants write lanes (and not the dead-letter topic the lanes' prefix sits beside), only inference
consumers read lanes, join lane groups and write the catalogue, and tenants read the catalogue."""

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

ROWS = [  # (user, action, topic role, expected); roles: "lane", "catalogue", "requests_dlq"
    ("alice", "write", "lane", "allowed"),
    ("bob", "write", "lane", "allowed"),
    ("alice", "read", "lane", "denied"),
    ("lorastream-inference", "read", "lane", "allowed"),
    ("alice", "write", "requests_dlq", "denied"),  # the lanes' prefix does not cover it
    ("alice", "write", "catalogue", "denied"),
    ("lorastream-trainer", "write", "catalogue", "denied"),
    ("lorastream-inference", "write", "catalogue", "allowed"),
    ("alice", "read", "catalogue", "allowed"),
    ("bob", "read", "catalogue", "allowed"),
]


@pytest.fixture(scope="module")
async def lane_topics(secured: SecuredDeployment) -> dict[str, str]:
    """The lane (created by the inference principal, as `serve --base-lane` does), the catalogue and
    the dead-letter topic, each holding one record."""
    lane = secured.topics.requests_for(BASE)
    inference = secured.config(secured.principals.inference)
    assert await ensure_topics(inference, [TopicSpec(lane, 2)]) == [lane]
    topics = {"lane": lane, "catalogue": secured.topics.catalogue, "requests_dlq": secured.topics.requests_dlq}
    producer = await start_producer(secured.admin)
    try:
        await asyncio.gather(*(producer.send_and_wait(t, b"seed", key=b"seed", partition=0) for t in topics.values()))
    finally:
        await producer.stop()
    return topics


@pytest.mark.parametrize(("user", "action", "role", "expected"), ROWS, ids=[f"{u}-{a}s-{r}" for u, a, r, _ in ROWS])
async def test_who_may_use_lanes_and_the_catalogue(secured, lane_topics, user, action, role, expected):
    outcome = read_outcome if action == "read" else write_outcome
    assert await outcome(secured, user, lane_topics[role]) == expected


async def test_a_tenant_creates_no_lane(secured):
    with pytest.raises(TopicAdminError, match="Authorization failed"):
        await ensure_topics(secured.config("alice"), [TopicSpec(secured.topics.requests_for("beta"), 1)])


async def test_a_tenant_cannot_join_a_lanes_group(secured, lane_topics):
    group = f"{secured.principals.inference_group}.{BASE}"
    consumer = make_consumer(secured.config("alice"), lane_topics["lane"], group_id=group)
    try:
        with pytest.raises(GroupAuthorizationFailedError):
            await consumer.start()
            await asyncio.wait_for(consumer.getmany(timeout_ms=2000), 10)
    finally:
        await consumer.stop()
    inference = make_consumer(secured.config(secured.principals.inference), lane_topics["lane"], group_id=group)
    await inference.start()  # the control: the service's principal joins it
    try:
        await asyncio.wait_for(inference.getmany(timeout_ms=2000), 10)
    finally:
        await inference.stop()
