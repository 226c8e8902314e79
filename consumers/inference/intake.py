"""Intake and commits: the request group's member, its poll loop, backpressure and offsets.

Every record polled is tracked, then handed to admission; an offset becomes committable once its
record and every lower one of its partition are finished (answered or dead-lettered), so nothing
is ever committed past an unanswered request. Commits go out every `commit_interval_ms`, carrying
the partition's epoch (streamer/epochs.py) in their metadata; the commit watchdog notices a
partition whose commit stopped moving while records wait. At `max_inflight` admitted-but-unanswered
requests every partition pauses, and resumes below `resume_below`. A rebalance commits what is
finished before giving partitions up and claims a new epoch for each partition it receives, and
tells the answer memory (answer_memory.py) which records it is about to re-serve.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from consumers.config import ServeConfig
from consumers.inference.answer_memory import AnswerMemory
from consumers.metrics import Metrics
from streamer import OffsetTracker
from streamer.commit_watchdog import CommitWatchdog
from streamer.epochs import PartitionEpochs
from streamer.retry import RetryPolicy, retry_transient
from streamer.transport import OffsetAndMetadata, TopicPartition, Transport

log = logging.getLogger(__name__)

EPOCH_CLAIM_RETRY = RetryPolicy(max_tries=None, deadline_s=10.0, first_backoff_s=0.05, max_backoff_s=1.0)

PAUSED_POLL_TIMEOUT_MS = 20  # while paused: how soon a resume below `resume_below` is noticed
MAX_POLL_TIMEOUT_MS = 100  # otherwise at most this: how soon `stopping` is noticed when idle

Admit = Callable[[TopicPartition, int, bytes], None]  # (partition, offset, record value)


def poll_timeout_ms(next_commit_s: float, now_s: float) -> int:
    """How long an unpaused poll may wait: until the next commit round, 1 to MAX_POLL_TIMEOUT_MS."""
    return max(1, min(MAX_POLL_TIMEOUT_MS, round((next_commit_s - now_s) * 1000)))


class Intake:
    def __init__(
        self,
        transport: Transport,
        requests_topic: str,
        group_id: str,
        config: ServeConfig,
        metrics: Metrics,
        memory: AnswerMemory,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.memory = memory
        self.offsets: OffsetTracker[TopicPartition] = OffsetTracker()
        self.epochs = PartitionEpochs()
        self.watchdog: CommitWatchdog[TopicPartition] = CommitWatchdog(config.commit_stall_s)
        self.stalled_partitions: list[TopicPartition] = []
        self.paused = False
        self.consumer = transport.group_consumer(
            [requests_topic], group_id=group_id, listener=self, group_instance_id=config.group_instance_id
        )

    def finish(self, tp: TopicPartition, offset: int) -> None:
        """The record at `offset` needs nothing more: its offset may be committed."""
        self.offsets.done(tp, offset)

    async def run(
        self,
        *,
        admit: Admit,
        num_inflight: Callable[[], int],
        ready: asyncio.Event,
        stopping: asyncio.Event,
        on_round: Callable[[], None],
    ) -> None:
        """Poll, admit, pause/resume and commit until `stopping` is set. `ready` is set after the
        first poll; `on_round` runs after each commit round (for gauges).

        A poll returns as soon as records arrive; an idle one waits until the next commit round
        is due (at most MAX_POLL_TIMEOUT_MS), or PAUSED_POLL_TIMEOUT_MS while paused."""
        next_commit = time.monotonic()
        while not stopping.is_set():
            timeout_ms = PAUSED_POLL_TIMEOUT_MS if self.paused else poll_timeout_ms(next_commit, time.monotonic())
            batch = await self.consumer.poll(timeout_ms=timeout_ms, max_records=self.config.max_fetch_records)
            ready.set()
            for tp, records in batch.items():
                self.memory.polled(tp, records)
                for record in records:
                    self.offsets.track(tp, record.offset)
                    admit(tp, record.offset, record.value or b"")
                if records:
                    self.memory.passed(tp, records[-1].offset)
            self.apply_backpressure(num_inflight())
            if time.monotonic() >= next_commit:
                await self.commit()
                self.watch_commits()
                on_round()
                next_commit = time.monotonic() + self.config.commit_interval_ms / 1000.0

    def apply_backpressure(self, inflight: int) -> None:
        """Pause every partition at max_inflight requests in flight; resume below resume_below."""
        self.metrics.inflight.set(inflight)
        if not self.paused and inflight >= self.config.max_inflight:
            self.consumer.pause(*self.consumer.assignment())
            self.paused = True
            self.metrics.paused.set(1)
        elif self.paused and inflight < self.config.resume_below:
            self.consumer.resume(*self.consumer.assignment())
            self.paused = False
            self.metrics.paused.set(0)

    async def commit(self) -> None:
        """Commit every owned partition's finished prefix; a failure is retried next round."""
        assigned = self.consumer.assignment()
        offsets = {
            tp: OffsetAndMetadata(offset, self.epochs.metadata(tp))
            for tp, offset in self.offsets.committable().items()
            if tp in assigned
        }
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except Exception as exc:  # transient (rebalance in progress, broker away): next round retries
            log.warning("commit failed: %r", exc)
            return
        self.offsets.committed({tp: om.offset for tp, om in offsets.items()})
        now_s = time.monotonic()
        for tp in offsets:
            self.watchdog.committed(tp, now_s)

    def watch_commits(self) -> None:
        lags = {}
        for tp in self.consumer.assignment():
            committed = self.offsets.committed_offset(tp)
            highwater = self.consumer.highwater(tp)
            if committed is None or highwater is None:
                lags[tp] = self.offsets.num_open(tp)
            else:
                lags[tp] = max(highwater - committed, 0)
        self.stalled_partitions = self.watchdog.stalled(lags, time.monotonic())
        self.metrics.commit_stalled.set(len(self.stalled_partitions))

    # ---- RebalanceListener -------------------------------------------------------------------

    async def on_revoked(self, partitions: Sequence[TopicPartition]) -> None:
        if partitions:
            await self.commit()
        for tp in partitions:
            self.offsets.forget(tp)
            self.epochs.forget(tp)
            self.watchdog.revoked(tp)
        self.memory.forget(partitions)
        self.metrics.assigned_partitions.set(0)  # eager protocol: all are revoked

    async def on_assigned(self, partitions: Sequence[TopicPartition]) -> None:
        self.metrics.assigned_partitions.set(len(partitions))
        if self.paused:  # a reassigned partition starts unpaused: backpressure must outlive the rebalance
            self.consumer.pause(*partitions)
        now_s = time.monotonic()
        for tp in partitions:
            self.watchdog.assigned(tp, now_s)
        self.memory.assigned(partitions)
        try:  # a partition just created may have no leader yet: transient, waited out briefly
            await retry_transient(
                lambda: self.epochs.claim(self.consumer, list(partitions)), what="claim partition epochs",
                policy=EPOCH_CLAIM_RETRY,
            )
        except Exception:  # answers then carry the request's own attempt; logged for operators
            log.exception("could not claim partition epochs for %s", sorted(partitions))
        try:
            await self.memory.taken_over(self.consumer, list(partitions))
        except Exception:  # every re-served request is then computed again
            log.exception("could not tell which records of %s are re-served", sorted(partitions))
            self.memory.forget(partitions)
