"""The outbox's lanes against a fake producer: one destination's trouble never delays another's,
nothing non-retriable is retried, transient failures are retried a bounded number of times."""

from __future__ import annotations

import asyncio

from aiokafka.errors import (
    KafkaConnectionError,
    MessageSizeTooLargeError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)

from streamer.outbox import Outbox
from streamer.retry import RetryPolicy
from streamer.send_policy import SendOutcome


class FakeProducer:
    """send() behaves per topic: 'hang' never acks, an int n raises a transient error n times, an
    exception is raised; a partition the topic lacks raises UnknownTopicOrPartitionError, as the
    Producer contract says (streamer/transport/protocol.py)."""

    def __init__(self, topics: dict[str, int], behaviour: dict[str, object]) -> None:
        self.topics = topics
        self.behaviour = behaviour
        self.sent: list[tuple[str, bytes]] = []
        self.tries: dict[str, int] = {}

    async def send(self, topic, value, key=None, partition=None):
        self.tries[topic] = self.tries.get(topic, 0) + 1
        if partition is not None and partition >= self.topics.get(topic, 0):
            raise UnknownTopicOrPartitionError(f"{topic} has no partition {partition}")
        what = self.behaviour.get(topic)
        if what == "hang":
            await asyncio.Event().wait()
        if isinstance(what, BaseException):
            raise what
        if isinstance(what, int) and self.tries[topic] <= what:
            raise KafkaConnectionError("broker away")
        self.sent.append((topic, value))
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


FAST = RetryPolicy(max_tries=3, first_backoff_s=0.001, max_backoff_s=0.001)


async def test_a_stuck_destination_delays_no_other():
    producer = FakeProducer({"stuck": 1, "good": 1, "results": 1}, {"stuck": "hang"})
    outbox = Outbox(producer, FAST)
    outcomes: dict[str, SendOutcome] = {}
    outbox.put("stuck", b"s", on_done=lambda o: outcomes.__setitem__("stuck", o))
    for i in range(3):
        outbox.put("good", b"g%d" % i, on_done=lambda o, i=i: outcomes.__setitem__(f"good{i}", o))
    outbox.put("results", b"r", on_done=lambda o: outcomes.__setitem__("results", o))
    for _ in range(10):
        await asyncio.sleep(0)
    assert outcomes == {"good0": SendOutcome.DELIVERED, "good1": SendOutcome.DELIVERED,
                        "good2": SendOutcome.DELIVERED, "results": SendOutcome.DELIVERED}
    assert [v for t, v in producer.sent if t == "good"] == [b"g0", b"g1", b"g2"]  # in order within a lane
    assert outbox.num_lanes == 1  # empty lanes are gone; only the stuck one remains
    await outbox.close(timeout_s=0.01)
    assert outcomes["stuck"] is SendOutcome.GAVE_UP


async def test_non_retriable_failures_are_tried_once():
    producer = FakeProducer(
        {"big": 1, "denied": 1},
        {"big": MessageSizeTooLargeError(), "denied": TopicAuthorizationFailedError()},
    )
    outbox = Outbox(producer, FAST)
    outcomes = {}
    outbox.put("big", b"x", on_done=lambda o: outcomes.__setitem__("big", o))
    outbox.put("denied", b"x", on_done=lambda o: outcomes.__setitem__("denied", o))
    await outbox.close(timeout_s=1.0)
    assert outcomes == {"big": SendOutcome.TOO_LARGE, "denied": SendOutcome.NOT_AUTHORIZED}
    assert producer.tries == {"big": 1, "denied": 1}


async def test_transient_failures_are_retried_a_bounded_number_of_times():
    producer = FakeProducer({"flaky": 1, "down": 1}, {"flaky": 2, "down": 100})
    outbox = Outbox(producer, FAST)
    outcomes = {}
    outbox.put("flaky", b"x", on_done=lambda o: outcomes.__setitem__("flaky", o))
    outbox.put("down", b"x", on_done=lambda o: outcomes.__setitem__("down", o))
    await outbox.close(timeout_s=1.0)
    assert outcomes == {"flaky": SendOutcome.DELIVERED, "down": SendOutcome.GAVE_UP}
    assert producer.tries == {"flaky": 3, "down": FAST.max_tries}


async def test_a_partition_that_does_not_exist_is_refused_without_sending():
    producer = FakeProducer({"replies": 2}, {})
    outbox = Outbox(producer, FAST)
    outcomes = []
    outbox.put("replies", b"x", partition=7, on_done=outcomes.append)
    outbox.put("replies", b"y", partition=1, on_done=outcomes.append)
    await outbox.close(timeout_s=1.0)
    assert outcomes == [SendOutcome.NO_SUCH_DESTINATION, SendOutcome.DELIVERED]
    assert producer.sent == [("replies", b"y")]


def test_a_lane_collected_after_its_loop_closed_tells_nobody():
    """An outbox whose loop closed without `stop` (a test that forgot it): when its lane is garbage-
    collected, the waiting records' callbacks must not run — they would schedule on a closed loop."""
    import gc

    loop = asyncio.new_event_loop()
    outcomes: list[SendOutcome] = []

    async def start() -> None:
        outbox = Outbox(FakeProducer({"stuck": 1}, {"stuck": "hang"}), FAST)
        outbox.put("stuck", b"s", on_done=outcomes.append)
        for _ in range(3):
            await asyncio.sleep(0)

    loop.run_until_complete(start())
    loop.close()  # the lane task is still pending: never cancelled, never finished
    gc.collect()
    assert outcomes == []
