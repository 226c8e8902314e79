"""Submitting fine-tune jobs and following their TrainingEvents.

    job = await submit_training(config, topics, build_training_request("acme/sql", "/data/sql.jsonl"))
    async with job:
        async for event in job.events():   # queued, started, progress..., completed | failed | cancelled
            ...

A request whose `base_model` names a base with its own training lane (a worker started with
`--base-lane` created `<prefix>.training.requests.base.<base>`) goes to that lane, so only that
base's workers see it; any other goes to the shared training-requests topic, where a worker of
another base refuses it with a typed failure. The events topic is read with a private, group-less consumer positioned at its end *before* the
request is published, so no event of the job is missed. A redelivered job repeats some events
(with a higher `attempt`); the iteration ends at the first terminal one.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, Self

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from schemas import (
    CancelJob,
    DatasetRef,
    Hyperparameters,
    InvalidEvent,
    JobState,
    TrainingEvent,
    TrainingRequest,
    decode_training_event,
    decode_training_request,
    encode,
)
from schemas.training import Evaluation, Release
from streamer.admin import default_topic_specs, describe_topics, ensure_topics
from streamer.config import KafkaConfig, TopicNames
from streamer.errors import PublishFailed, RequestTimeout
from streamer.kafka import make_consumer, start_producer

TERMINAL_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})
_POLL_MS = 200


def build_training_request(
    adapter_id: str,
    dataset: str | DatasetRef,
    *,
    job_id: str | None = None,
    base_model: str | None = None,
    overwrite: bool = False,
    evaluation: Evaluation | None = None,
    release: Release = Release(),
    **hyperparameters: Any,
) -> TrainingRequest:
    """A TrainingRequest; `dataset` is a JSONL path/URI or a DatasetRef; hyperparameters by name
    (r, alpha, learning_rate, max_steps, ...; unset ones are chosen by the worker from the base's size: gpu_engine/training/defaults.py);
    `evaluation` and `release`: the release gate (docs/training.md). Raises InvalidEvent."""
    ref = dataset if isinstance(dataset, DatasetRef) else DatasetRef(uri=dataset)
    request = TrainingRequest(
        job_id=job_id or uuid.uuid4().hex,
        adapter_id=adapter_id,
        dataset=ref,
        base_model=base_model,
        hyperparameters=Hyperparameters(**hyperparameters),
        overwrite=overwrite,
        evaluation=evaluation,
        release=release,
    )
    return decode_training_request(encode(request))  # the worker's validation, here and now


class TrainingJob:
    """Handle on one job's events; close it (or use `async with`) to release its consumer."""

    def __init__(
        self,
        config: KafkaConfig,
        topics: TopicNames,
        job_id: str,
        consumer,
        producer: AIOKafkaProducer,
        owns_producer: bool,
    ) -> None:
        self.config, self.topics, self.job_id = config, topics, job_id
        self.last_event: TrainingEvent | None = None
        self.requests_topic = topics.training_requests  # where the request went (submit_training)
        self._consumer, self._producer, self._owns_producer = consumer, producer, owns_producer
        self._pending: deque[TrainingEvent] = deque()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def events(self, *, idle_timeout_s: float | None = None) -> AsyncIterator[TrainingEvent]:
        """This job's events in order, ending after the terminal one.

        Raises RequestTimeout when no event of the job arrives for `idle_timeout_s`.
        """
        if self.last_event is not None and self.last_event.state in TERMINAL_STATES:
            return
        deadline = None if idle_timeout_s is None else time.monotonic() + idle_timeout_s
        while True:
            while self._pending:  # fetched earlier; kept when a caller stopped iterating mid-batch
                event = self.last_event = self._pending.popleft()
                yield event
                if event.state in TERMINAL_STATES:
                    return
                if idle_timeout_s is not None:
                    deadline = time.monotonic() + idle_timeout_s
            if deadline is not None and time.monotonic() > deadline:
                raise RequestTimeout(self.job_id, idle_timeout_s)
            for records in (await self._consumer.getmany(timeout_ms=_POLL_MS)).values():
                self._pending.extend(e for e in map(self._decode, records) if e is not None)

    def _decode(self, record) -> TrainingEvent | None:
        if record.key != self.job_id.encode():
            return None
        try:
            event = decode_training_event(record.value or b"")
        except InvalidEvent:
            return None
        return event if event.job_id == self.job_id else None

    async def wait(self, *, idle_timeout_s: float | None = None) -> TrainingEvent:
        """The terminal event (completed, failed or cancelled)."""
        async for _ in self.events(idle_timeout_s=idle_timeout_s):
            pass
        return self.last_event

    async def cancel(self) -> None:
        """Ask the worker running (or about to run) this job to cancel it."""
        try:
            await self._producer.send_and_wait(
                self.topics.control, encode(CancelJob(self.job_id)), key=self.job_id.encode()
            )
        except KafkaError as exc:
            raise PublishFailed(f"cancel of job {self.job_id} not published: {exc!r}") from exc

    async def close(self) -> None:
        await self._consumer.stop()
        if self._owns_producer:
            await self._producer.stop()


async def follow_training(
    config: KafkaConfig,
    topics: TopicNames,
    job_id: str,
    *,
    producer: AIOKafkaProducer | None = None,
    from_beginning: bool = True,
) -> TrainingJob:
    """A handle on a job submitted earlier (by anyone): its events from the topic's start (or end)."""
    owns_producer = producer is None
    producer = producer or await start_producer(config)
    consumer = make_consumer(config)
    try:
        await ensure_topics(
            config,
            [
                s
                for s in default_topic_specs(topics)
                if s.name in (topics.training_requests, topics.training_events, topics.control)
            ],
        )
        await consumer.start()
        infos = await describe_topics(config, [topics.training_events])
        tps = [TopicPartition(topics.training_events, p) for info in infos for p in range(info.partitions)]
        consumer.assign(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
            await asyncio.gather(*(consumer.position(tp) for tp in tps))  # pin the end now
    except BaseException:
        await consumer.stop()
        if owns_producer:
            await producer.stop()
        raise
    return TrainingJob(config, topics, job_id, consumer, producer, owns_producer)


async def training_requests_topic(config: KafkaConfig, topics: TopicNames, base_model: str | None) -> str:
    """The topic a request for `base_model` goes to: its base's training lane when that topic
    exists, else the shared training-requests topic (also for None, or a path, which no lane is
    named by)."""
    if base_model is None:
        return topics.training_requests
    try:
        lane = topics.training_requests_for(base_model)
    except ValueError:
        return topics.training_requests
    return lane if await describe_topics(config, [lane]) else topics.training_requests


async def submit_training(
    config: KafkaConfig, topics: TopicNames, request: TrainingRequest, *, producer: AIOKafkaProducer | None = None
) -> TrainingJob:
    """Publish `request` (keyed by job_id) on its base's training lane, else the shared
    training-requests topic (`training_requests_topic`), and return its handle.

    `producer`: a started producer to reuse (LoraClient's); else one is made and closed with the job.
    Raises InvalidEvent (the worker would refuse the request) or PublishFailed.
    """
    decode_training_request(encode(request))
    topic = await training_requests_topic(config, topics, request.base_model)
    job = await follow_training(config, topics, request.job_id, producer=producer, from_beginning=False)
    job.requests_topic = topic
    try:
        await job._producer.send_and_wait(topic, encode(request), key=request.job_id.encode())
    except KafkaError as exc:
        await job.close()
        raise PublishFailed(f"training request {request.job_id} not published: {exc!r}") from exc
    return job
