"""Consumer defaults, the transient-error retry, and the torch-free import."""

from __future__ import annotations

import subprocess
import sys

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, TopicAuthorizationFailedError

from streamer import KafkaConfig, RetryPolicy, is_transient, make_consumer, retry_transient

CFG = KafkaConfig("127.0.0.1:1")


def test_importing_schemas_and_streamer_leaves_torch_out() -> None:
    code = (
        "import sys, schemas, streamer, streamer.brokers; "
        "sys.exit('torch' in sys.modules or 'transformers' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


async def test_consumer_defaults_are_low_latency_and_never_auto_commit() -> None:
    consumer = make_consumer(CFG, "t", group_id="g", fetch_max_wait_ms=7)
    assert consumer._fetch_max_wait_ms == 7
    assert consumer._enable_auto_commit is False
    assert make_consumer(CFG)._fetch_max_wait_ms == 5
    long_poll = KafkaConfig("127.0.0.1:1", fetch_max_wait_ms=500)
    assert make_consumer(long_poll)._fetch_max_wait_ms == 500
    assert make_consumer(long_poll, fetch_max_wait_ms=7)._fetch_max_wait_ms == 7


def test_transient_errors() -> None:
    assert is_transient(KafkaConnectionError())
    assert is_transient(ConnectionRefusedError())
    assert is_transient(KafkaTimeoutError())
    assert not is_transient(TopicAuthorizationFailedError())
    assert not is_transient(ValueError())


async def test_retry_transient_retries_then_succeeds() -> None:
    calls = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise KafkaConnectionError("not yet")
        return "ok"

    assert await retry_transient(flaky, what="test", policy=RetryPolicy(max_tries=None, deadline_s=5, first_backoff_s=0.01)) == "ok"
    assert len(calls) == 3


async def test_retry_transient_raises_permanent_errors_at_once() -> None:
    calls = []

    async def denied() -> None:
        calls.append(1)
        raise TopicAuthorizationFailedError()

    with pytest.raises(TopicAuthorizationFailedError):
        await retry_transient(denied, what="test", policy=RetryPolicy(max_tries=None, deadline_s=5))
    assert len(calls) == 1


async def test_retry_transient_gives_up_after_the_timeout() -> None:
    async def down() -> None:
        raise KafkaConnectionError("down")

    with pytest.raises(KafkaConnectionError):
        await retry_transient(down, what="test", policy=RetryPolicy(max_tries=None, deadline_s=0.3))


@pytest.mark.parametrize(
    ("policy", "failures", "elapsed_s", "gives_up"),
    [
        (RetryPolicy(max_tries=3), 2, 100.0, False),
        (RetryPolicy(max_tries=3), 3, 0.0, True),
        (RetryPolicy(max_tries=None, deadline_s=1.0), 1000, 0.5, False),
        (RetryPolicy(max_tries=None, deadline_s=1.0), 1, 1.0, True),
        (RetryPolicy(max_tries=5, deadline_s=1.0), 5, 0.1, True),
        (RetryPolicy(max_tries=None), 10**6, 10**6, False),
    ],
)
def test_retry_policy_gives_up_by_tries_or_deadline(policy, failures, elapsed_s, gives_up) -> None:
    assert policy.gives_up(failures, elapsed_s) is gives_up


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"max_tries": 0}, "max_tries"), ({"deadline_s": -1}, "deadline_s"), ({"first_backoff_s": 3, "max_backoff_s": 2}, "backoffs")],
)
def test_retry_policy_refuses_nonsense(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)


def test_backoff_doubles_up_to_its_cap() -> None:
    policy = RetryPolicy(first_backoff_s=0.1, max_backoff_s=0.5)
    assert [policy.backoff_s(n) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.4, 0.5]
