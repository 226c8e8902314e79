"""Outgoing records, in one ordered lane per destination topic.

Records bound for the same topic leave in the order they were put (a request's chunks before its
Final), but lanes never wait for each other: a reply topic that is slow, missing or refused by the
broker delays only what goes there, never the results copies, dead letters or other tenants'
replies. A lane exists while it has records and ends when it is empty, so the number of lanes is
the number of destinations with records waiting.

Every record ends in exactly one `SendOutcome`, reported to its `on_done` callback: delivered once
the broker acknowledged it, or the reason it never will be. Transient errors are retried per the
`RetryPolicy`; others are not retried at all (see streamer/send_policy.py). By the `Producer`
contract (streamer/transport), UnknownTopicOrPartitionError raised by `send` itself means the
broker said the topic or partition does not exist: that ends the record as NO_SUCH_DESTINATION.
"""

from __future__ import annotations

import asyncio
import time
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka.errors import UnknownTopicOrPartitionError

from streamer.retry import SEND_RETRY, RetryPolicy
from streamer.send_policy import SendOutcome, classify
from streamer.transport import Producer

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    value: bytes
    key: bytes | None = None
    partition: int | None = None
    on_done: Callable[[SendOutcome], None] | None = None


class Outbox:
    def __init__(
        self,
        producer: Producer,
        policy: RetryPolicy = SEND_RETRY,
    ) -> None:
        self._producer = producer
        self._policy = policy
        self._lanes: dict[str, deque[Outgoing]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._unacked = 0  # records put and not yet ended in an outcome
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def num_lanes(self) -> int:
        return len(self._lanes)

    @property
    def num_unacked(self) -> int:
        return self._unacked

    def put(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        on_done: Callable[[SendOutcome], None] | None = None,
    ) -> None:
        item = Outgoing(topic, value, key, partition, on_done)
        self._unacked += 1
        self._idle.clear()
        lane = self._lanes.get(topic)
        if lane is not None:
            lane.append(item)
            return
        self._lanes[topic] = deque([item])
        task = asyncio.create_task(self._run_lane(topic), name=f"lorastream-outbox:{topic}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, timeout_s: float) -> None:
        """Wait (up to timeout_s) until every record has an outcome, then stop the lanes."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            log.warning("outbox: %d records without an outcome at shutdown", self._unacked)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run_lane(self, topic: str) -> None:
        lane = self._lanes[topic]
        try:
            while lane:
                await self._send(lane[0])
                lane.popleft()
        except GeneratorExit:  # collected after its loop closed (an outbox never stopped): nobody to tell
            lane.clear()
            raise
        finally:
            if self._lanes.get(topic) is lane:
                del self._lanes[topic]
            for item in lane:  # cancelled at shutdown: what is left never leaves
                self._end(item, SendOutcome.GAVE_UP)

    async def _send(self, item: Outgoing) -> None:
        failures = 0
        started_s = time.monotonic()
        while True:
            try:
                future = await self._producer.send(item.topic, item.value, key=item.key, partition=item.partition)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                outcome = classify(exc)
                if outcome is None and isinstance(exc, UnknownTopicOrPartitionError):
                    outcome = SendOutcome.NO_SUCH_DESTINATION
                if outcome is None and self._policy.gives_up(failures, time.monotonic() - started_s):
                    outcome = SendOutcome.GAVE_UP
                if outcome is not None:
                    log.warning("send to %s ended %s: %r", item.topic, outcome.value, exc)
                    self._end(item, outcome)
                    return
                await asyncio.sleep(self._policy.backoff_s(failures))
        future.add_done_callback(lambda f: self._end(item, _ack_outcome(f)))

    def _end(self, item: Outgoing, outcome: SendOutcome) -> None:
        self._unacked -= 1
        if self._unacked == 0:
            self._idle.set()
        if item.on_done is not None:
            try:
                item.on_done(outcome)
            except Exception:  # a caller's bug must not stop the lane
                log.exception("outbox: on_done for %s failed", item.topic)


def _ack_outcome(future: asyncio.Future) -> SendOutcome:
    if future.cancelled():
        return SendOutcome.GAVE_UP
    exc = future.exception()
    if exc is None:
        return SendOutcome.DELIVERED
    return classify(exc) or SendOutcome.GAVE_UP
