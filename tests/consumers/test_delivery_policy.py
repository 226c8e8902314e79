"""Send-failure classification, the retry policy, the reply-topic policy and the commit watchdog:
pure bookkeeping, table-tested."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import (
    InvalidTopicError,
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
    UnsupportedVersionError,
)

from streamer.commit_watchdog import CommitWatchdog
from streamer.reply_topics import ReplyPolicy, ReplyTopicDirectory, TopicStatus
from streamer.retry import RetryPolicy
from streamer.send_policy import SendOutcome, classify
from schemas import ErrorCode, ReplyAddress

CLASSIFY = {
    "too large (client check)": (MessageSizeTooLargeError(), SendOutcome.TOO_LARGE),
    "too large (broker)": (RecordTooLargeError(), SendOutcome.TOO_LARGE),
    "not authorized": (TopicAuthorizationFailedError(), SendOutcome.NOT_AUTHORIZED),
    "invalid topic name": (InvalidTopicError(), SendOutcome.NO_SUCH_DESTINATION),
    "unknown topic: ask the broker first": (UnknownTopicOrPartitionError(), None),
    "leader moving": (NotLeaderForPartitionError(), None),
    "connection lost": (KafkaConnectionError(), None),
    "no ack in time": (KafkaTimeoutError(), None),
    "asyncio timeout": (TimeoutError(), None),
    "other non-retriable": (UnsupportedVersionError(), SendOutcome.REFUSED),
    "client refuses arguments": (AssertionError("partition"), SendOutcome.REFUSED),
}


@pytest.mark.parametrize(("exc", "expected"), CLASSIFY.values(), ids=CLASSIFY.keys())
def test_classify(exc, expected):
    assert classify(exc) is expected


def test_wire_codes_of_outcomes():
    assert SendOutcome.TOO_LARGE.wire_code is ErrorCode.RECORD_TOO_LARGE
    assert SendOutcome.NO_SUCH_DESTINATION.wire_code is ErrorCode.REPLY_TOPIC_NOT_FOUND
    assert SendOutcome.NOT_AUTHORIZED.wire_code is ErrorCode.REPLY_NOT_AUTHORIZED
    assert SendOutcome.GAVE_UP.wire_code is ErrorCode.INTERNAL


def test_retry_backoff_doubles_to_a_cap():
    policy = RetryPolicy(max_tries=5, first_backoff_s=0.1, max_backoff_s=0.5)
    assert [policy.backoff_s(n) for n in range(1, 6)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    with pytest.raises(ValueError):
        RetryPolicy(max_tries=0)
    with pytest.raises(ValueError):
        RetryPolicy(first_backoff_s=1.0, max_backoff_s=0.5)


SERVICE_TOPICS = ["ls.requests", "ls.requests.dlq", "ls.results", "ls.control", "ls.adapters"]
POLICY = {
    "a client's reply topic": ("ls.replies.client-1", "ls.replies.*", False),
    "the requests topic": ("ls.requests", "ls.replies.*", True),
    "the adapters registry": ("ls.adapters", "ls.replies.*", True),
    "the results topic": ("ls.results", "ls.replies.*", True),
    "another deployment's replies": ("other.replies.x", "ls.replies.*", True),
    "a look-alike prefix": ("ls.repliesX", "ls.replies.*", True),
    "service topic even under a catch-all pattern": ("ls.control", "*", True),
    "anything under a catch-all pattern": ("whatever", "*", False),
}


@pytest.mark.parametrize(("topic", "pattern", "refused"), POLICY.values(), ids=POLICY.keys())
def test_reply_policy(topic, pattern, refused):
    assert (ReplyPolicy(pattern, SERVICE_TOPICS).refusal(topic) is not None) is refused


STATUS = {
    "exists, no partition named": (TopicStatus(num_partitions=2), None, None),
    "exists, partition within": (TopicStatus(num_partitions=2), 1, None),
    "exists, partition past the end": (TopicStatus(num_partitions=2), 2, ErrorCode.REPLY_TOPIC_NOT_FOUND),
    "missing": (TopicStatus(refused=ErrorCode.REPLY_TOPIC_NOT_FOUND), 0, ErrorCode.REPLY_TOPIC_NOT_FOUND),
    "not authorized": (TopicStatus(refused=ErrorCode.REPLY_NOT_AUTHORIZED), None, ErrorCode.REPLY_NOT_AUTHORIZED),
}


@pytest.mark.parametrize(("status", "partition", "code"), STATUS.values(), ids=STATUS.keys())
def test_topic_status_refusal(status, partition, code):
    refusal = status.refusal(ReplyAddress("ls.replies.a", partition))
    assert (refusal[0] if refusal else None) is code


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


async def test_directory_asks_once_per_topic_and_remembers_for_a_while():
    calls: list[str] = []
    gate = asyncio.Event()

    async def describe(topic: str) -> dict:
        calls.append(topic)
        await gate.wait()
        if topic == "ls.replies.gone":
            return {"error_code": 3, "topic": topic, "partitions": []}
        if topic == "ls.replies.secret":
            return {"error_code": 29, "topic": topic, "partitions": []}
        return {"error_code": 0, "topic": topic, "partitions": [{}, {}, {}]}

    clock = FakeClock()
    directory = ReplyTopicDirectory(describe, found_ttl_s=60, missing_ttl_s=5, max_topics=2, clock=clock)
    lookups = [asyncio.ensure_future(directory.lookup("ls.replies.a")) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    statuses = await asyncio.gather(*lookups)
    assert calls == ["ls.replies.a"]  # single flight
    assert all(s == TopicStatus(num_partitions=3) for s in statuses)
    assert (await directory.lookup("ls.replies.gone")).refused is ErrorCode.REPLY_TOPIC_NOT_FOUND
    assert directory.cached("ls.replies.gone") is not None
    clock.now_s = 6.0  # a missing topic is forgotten soon: its client may create it
    assert directory.cached("ls.replies.gone") is None
    assert (await directory.lookup("ls.replies.secret")).refused is ErrorCode.REPLY_NOT_AUTHORIZED
    await directory.lookup("ls.replies.b")
    assert directory.cached("ls.replies.a") is None  # bounded: the oldest entry went


async def test_directory_says_none_when_the_broker_cannot_answer():
    async def describe(topic: str) -> dict:
        raise ConnectionError("broker away")

    directory = ReplyTopicDirectory(describe)
    assert await directory.lookup("ls.replies.a") is None
    assert directory.cached("ls.replies.a") is None


WATCHDOG = {
    # (events, lags, now, stalled)
    "fresh assignment with lag": ([("assign", "p", 0.0)], {"p": 5}, 5.0, []),
    "lag and no commit for the stall time": ([("assign", "p", 0.0)], {"p": 5}, 10.0, ["p"]),
    "no lag, no stall": ([("assign", "p", 0.0)], {"p": 0}, 100.0, []),
    "commit resets the clock": ([("assign", "p", 0.0), ("commit", "p", 8.0)], {"p": 5}, 12.0, []),
    "revoked partitions are not watched": ([("assign", "p", 0.0), ("revoke", "p", 1.0)], {"p": 5}, 50.0, []),
    "commit of an unassigned partition is ignored": ([("commit", "q", 0.0)], {"q": 5}, 50.0, []),
    "only the stuck one": ([("assign", "p", 0.0), ("assign", "q", 0.0), ("commit", "q", 9.0)], {"p": 1, "q": 1}, 10.0, ["p"]),
}


@pytest.mark.parametrize(("events", "lags", "now_s", "stalled"), WATCHDOG.values(), ids=WATCHDOG.keys())
def test_commit_watchdog(events, lags, now_s, stalled):
    watchdog: CommitWatchdog[str] = CommitWatchdog(stall_after_s=10.0)
    for action, tp, at_s in events:
        if action == "assign":
            watchdog.assigned(tp, at_s)
        elif action == "commit":
            watchdog.committed(tp, at_s)
        else:
            watchdog.revoked(tp)
    assert watchdog.stalled(lags, now_s) == stalled
