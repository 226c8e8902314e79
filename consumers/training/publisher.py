"""Everything the training worker writes: TrainingEvents (keyed by job_id), AdapterEvents on the
adapters topic (keyed by adapter id), and dead letters for requests that ended in failure.

Progress reports leave without waiting (a lost one is logged; the next supersedes it). Terminal
events, announcements and dead letters wait for the broker's acknowledgement, transient errors
retried by the one helper (`streamer.retry_transient`), before the request may be committed.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec

from consumers.training.translation import bounded, now_ms
from schemas import AdapterEvent, ErrorCode, JobState, TrainingEvent, encode
from schemas.deadletter import dead_letter
from streamer import TopicNames, retry_transient
from streamer.transport import Producer, Record

log = logging.getLogger(__name__)


class TrainingPublisher:
    """Writes through a started `producer`; its user starts and stops it."""

    def __init__(self, producer: Producer, topics: TopicNames) -> None:
        self._producer = producer
        self._topics = topics

    async def report(self, event: TrainingEvent) -> None:
        """A non-terminal event: sent without waiting for the broker."""
        delivery = await self._producer.send(
            self._topics.training_events, encode(event), key=event.job_id.encode()
        )
        delivery.add_done_callback(_log_lost_report)

    async def settle(self, event: TrainingEvent) -> None:
        """A terminal event: acknowledged by the broker before this returns."""
        await self._send_acked(self._topics.training_events, event.job_id, event)

    async def announce(self, event: AdapterEvent) -> None:
        """A new adapter version on the adapters topic, acknowledged."""
        await self._send_acked(self._topics.adapters, event.adapter_id, event)

    async def fail(self, record: Record, job_id: str | None, code: ErrorCode, reason: str, *, attempt: int) -> None:
        """A request ends in failure: a `failed` event (when a job_id could be read) and a dead letter."""
        if job_id is not None:
            failed = TrainingEvent(
                job_id=job_id, state=JobState.FAILED, ts_ms=now_ms(), attempt=attempt, code=code, reason=bounded(reason)
            )
            await self.settle(failed)
        await self.dead_letter(record, job_id, code, reason)

    async def dead_letter(self, record: Record, job_id: str | None, code: ErrorCode, reason: str) -> None:
        """The failed request's bytes on the dead-letter topic; a copy that cannot be sent is logged."""
        tp = record.tp
        log.warning("training request at %s@%d failed (%s): %s", tp, record.offset, code.value, reason)
        letter = dead_letter(
            source_topic=tp.topic,
            partition=tp.partition,
            offset=record.offset,
            code=code,
            reason=reason,
            original=record.value or b"",
            request_id=job_id,
            ts_ms=now_ms(),
        )
        try:
            await self._send_acked(self._topics.requests_dlq, job_id or "", letter)
        except Exception as exc:  # the failure is answered already; a lost copy must not stop the worker
            log.error("dead letter for %s@%d not delivered: %r", tp, record.offset, exc)

    async def _send_acked(self, topic: str, key: str, event: msgspec.Struct) -> None:
        value = encode(event)

        async def send_and_wait() -> None:
            delivery = await self._producer.send(topic, value, key=key.encode())
            await delivery

        await retry_transient(send_and_wait, what=f"publish to {topic}")


def _log_lost_report(delivery: asyncio.Future) -> None:
    if not delivery.cancelled() and delivery.exception() is not None:
        log.warning("a progress event was not delivered: %r", delivery.exception())
