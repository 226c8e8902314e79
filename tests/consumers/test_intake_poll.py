"""The intake's poll wait: an idle poll waits until the next commit round, a paused one briefly."""

from __future__ import annotations

import asyncio

import pytest

from consumers.config import ServeConfig
from consumers.inference.intake import MAX_POLL_TIMEOUT_MS, PAUSED_POLL_TIMEOUT_MS, Intake, poll_timeout_ms
from consumers.metrics import Metrics


class RecordingConsumer:
    """A group consumer that never has records; it records each poll's timeout."""

    def __init__(self) -> None:
        self.timeouts_ms: list[int] = []

    async def poll(self, timeout_ms: int, max_records: int | None = None) -> dict:
        self.timeouts_ms.append(timeout_ms)
        await asyncio.sleep(timeout_ms / 1000.0)
        return {}

    def assignment(self) -> frozenset:
        return frozenset()

    def pause(self, *tps) -> None:
        pass

    def resume(self, *tps) -> None:
        pass


class OneConsumerTransport:
    def __init__(self, consumer: RecordingConsumer) -> None:
        self.consumer = consumer

    def group_consumer(self, topics, *, group_id, listener, group_instance_id=None) -> RecordingConsumer:
        return self.consumer


@pytest.mark.parametrize(
    ("next_commit_s", "now_s", "expected_ms"),
    [(10.1, 10.0, 100), (10.05, 10.0, 50), (10.0, 10.0, 1), (9.0, 10.0, 1), (610.0, 10.0, MAX_POLL_TIMEOUT_MS)],
)
def test_an_idle_poll_waits_until_the_next_commit_round(next_commit_s, now_s, expected_ms):
    assert poll_timeout_ms(next_commit_s, now_s) == expected_ms


class NoMemory:
    def polled(self, tp, records) -> None:
        pass

    def passed(self, tp, offset) -> None:
        pass


async def intake_polls(config: ServeConfig, paused: bool, run_s: float = 0.5) -> list[int]:
    """The poll timeouts of an intake that sees no records for `run_s`."""
    stopping, consumer = asyncio.Event(), RecordingConsumer()
    intake = Intake(OneConsumerTransport(consumer), "requests", "group", config, Metrics(), NoMemory())
    intake.paused = paused
    inflight = config.max_inflight if paused else 0  # stays paused, or stays unpaused
    asyncio.get_running_loop().call_later(run_s, stopping.set)
    await asyncio.wait_for(
        intake.run(admit=lambda *a: None, num_inflight=lambda: inflight, ready=asyncio.Event(),
                   stopping=stopping, on_round=lambda: None),
        10,
    )
    return consumer.timeouts_ms


async def test_an_idle_intake_polls_about_once_per_commit_round():
    # before: every poll waited 20 ms whatever the commit interval (~25 wake-ups in 0.5 s)
    timeouts = await intake_polls(ServeConfig(commit_interval_ms=100.0), paused=False)
    assert timeouts[0] == 1  # the first commit round is due at once
    assert len(timeouts) <= 12, timeouts
    assert max(timeouts) <= 100


async def test_a_long_commit_interval_does_not_delay_stopping():
    timeouts = await intake_polls(ServeConfig(commit_interval_ms=600_000.0), paused=False)
    assert max(timeouts) <= MAX_POLL_TIMEOUT_MS


async def test_a_paused_intake_polls_briefly_to_notice_a_resume_soon():
    timeouts = await intake_polls(ServeConfig(commit_interval_ms=100.0), paused=True)
    assert len(timeouts) >= 10 and set(timeouts) == {PAUSED_POLL_TIMEOUT_MS}
