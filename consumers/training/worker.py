"""The training worker: TrainingRequests in (one consumer group), one job at a time, TrainingEvents
out (keyed by job_id), adapters into the adapter root, AdapterEvents on the adapters topic.
With `base_lane` it reads its base's own lane (`TopicNames.training_requests_for`) in group
`<group_id>.<base>`, so workers of other bases never see its requests; a request for another base
that reaches it anyway (the shared topic, or a lane written by hand) is refused as before.

This module owns intake, commits and rebalances. Per request: decode → `queued` → validate off
the event loop (`jobs.prepare_job`) → run the job and relay its events (`job_runner.JobRun`) →
the terminal event is acknowledged → commit. A request that ends in failure — bad bytes, a
refusal, a failed job, or any exception on the way — gets a `failed` event with its code (when a
job_id can be read) and a dead letter (`publisher`), and is committed: no record stops the worker.

A job's files live in `<work_dir>/<job_id>/`, so a redelivered request (crash, rebalance, stop)
resumes from the job's last checkpoint, and a redelivered finished job republishes its result; a
request whose runs keep dying with the worker is given up after `max_unfinished_runs`. While a
job runs every partition is paused and the consumer keeps polling, so group membership survives
jobs longer than max_poll_interval_ms; a rebalance that takes the job's partition preempts it
(checkpointed, uncommitted) before the partition is given up. Cancellations arrive on the control
topic (`cancellations`). Kafka is reached only through a `streamer.transport.Transport`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence

from consumers.training.cancellations import CancelledJobs
from consumers.training.config import TrainWorkerConfig
from consumers.training.job_runner import JobLauncher, JobRun, launch_job_process
from consumers.training.jobs import BuiltinTasks, JobRefused, prepare_job, salvage_job_id
from consumers.training.publisher import TrainingPublisher
from consumers.training.release_gate import AnswerGenerator, EvalSets, ReleaseGate
from consumers.training.translation import training_event
from schemas import ErrorCode, InvalidEvent, JobState, TrainingRequest, decode_training_request
from streamer import TopicNames, default_topic_specs
from streamer.control import ControlListener
from streamer.transport import GroupConsumer, OffsetAndMetadata, Record, TopicPartition, Transport

log = logging.getLogger(__name__)

_POLL_MS = 200
_BUSY_POLL_S = 1.0  # while a job runs: how often the (paused) consumer polls to stay in the group


class TrainingWorker:
    """`await worker.run()` until `stop()`; `ready` is set once it consumes and listens for cancels.

    `launch` starts a prepared job (default: its own `run_job` process); tests script one.
    `eval_sets` supplies the evaluations of the release gate (None: requests with one are refused);
    `generate_answers` decodes them (default: the serving engine; tests script it).
    """

    def __init__(
        self,
        transport: Transport,
        topics: TopicNames,
        config: TrainWorkerConfig,
        *,
        launch: JobLauncher = launch_job_process,
        builtin_tasks: BuiltinTasks | None = None,
        eval_sets: EvalSets | None = None,
        generate_answers: AnswerGenerator | None = None,
    ) -> None:
        self.topics, self.config = topics, config
        self.ready = asyncio.Event()
        self._transport = transport
        self._launch = launch
        self._builtin_tasks = builtin_tasks
        self._eval_sets = eval_sets
        gate_options = {} if generate_answers is None else {"generate": generate_answers}
        self._gate = ReleaseGate(config, eval_sets, **gate_options)
        self._stopping = asyncio.Event()
        self._consumer: GroupConsumer | None = None
        self._publisher: TrainingPublisher | None = None
        self._current: JobRun | None = None
        self._cancelled = CancelledJobs()

    def stop(self) -> None:
        """Stop consuming; a running job is checkpointed and left uncommitted (it resumes elsewhere)."""
        self._stopping.set()
        if self._current is not None:
            self._current.preempt()

    async def run(self) -> None:
        specs = default_topic_specs(self.topics, training_partitions=self.config.training_partitions)
        requests_topic = self.config.requests_topic(self.topics)
        if requests_topic != self.topics.training_requests:  # its base's lane, shaped like the shared topic
            (shared,) = (spec for spec in specs if spec.name == self.topics.training_requests)
            specs.append(dataclasses.replace(shared, name=requests_topic))
        await self._transport.ensure_topics(specs)
        producer = self._transport.producer()
        await producer.start()
        consumer = cancels = None
        try:
            self._publisher = TrainingPublisher(producer, self.topics)
            consumer = self._transport.group_consumer(
                [requests_topic], group_id=self.config.consumer_group, listener=_Rebalance(self)
            )
            await consumer.start()
            self._consumer = consumer
            cancels = ControlListener(self._transport, self.topics.control, on_cancel_job=self._on_cancel)
            await cancels.start()
            self.ready.set()
            while not self._stopping.is_set():
                batch = await consumer.poll(timeout_ms=_POLL_MS, max_records=1)
                for record in (record for records in batch.values() for record in records):
                    if self._stopping.is_set():
                        break  # left uncommitted: redelivered to whoever owns the partition next
                    await self._process(record)
        finally:
            for client in (cancels, consumer, producer):
                if client is not None:
                    await client.stop()

    async def _process(self, record: Record) -> None:
        """Handle one request while the consumer, paused, keeps polling; commit when it ended."""
        consumer = self._consumer
        task = asyncio.create_task(self._handle(record))
        consumer.pause(*consumer.assignment())
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=_BUSY_POLL_S)
                for other_tp, records in (await consumer.poll(timeout_ms=0)).items():
                    consumer.seek(other_tp, records[0].offset)  # newly assigned while busy: later
                    consumer.pause(other_tp)
            finished = task.result()
        finally:
            consumer.resume(*consumer.assignment())
        if finished and record.tp in consumer.assignment():
            try:
                await consumer.commit({record.tp: OffsetAndMetadata(record.offset + 1)})
            except Exception as exc:  # rebalanced meanwhile: the redelivery republishes the result
                log.warning("commit of %s@%d failed: %r", record.tp, record.offset, exc)

    async def _handle(self, record: Record) -> bool:
        """True when the request reached a terminal event (and may be committed)."""
        try:
            request = decode_training_request(record.value or b"")
        except InvalidEvent as exc:
            await self._publisher.fail(record, salvage_job_id(record.value), exc.code, exc.message, attempt=0)
            return True
        try:
            return await self._serve(record, request)
        except Exception as exc:  # a bug or a resource failure: a typed failure, never a worker exit
            log.exception("training job %s failed unexpectedly", request.job_id)
            attempt = self._current.attempt if self._current is not None else request.attempt
            reason = f"{type(exc).__name__}: {exc}"
            await self._publisher.fail(record, request.job_id, ErrorCode.INTERNAL, reason, attempt=attempt)
            return True
        finally:
            self._current = None

    async def _serve(self, record: Record, request: TrainingRequest) -> bool:
        await self._publisher.report(training_event(request.job_id, JobState.QUEUED, attempt=request.attempt))
        if request.job_id in self._cancelled:
            cancelled = training_event(
                request.job_id,
                JobState.CANCELLED,
                attempt=request.attempt,
                code=ErrorCode.CANCELLED,
                reason="cancelled before it started",
            )
            await self._publisher.settle(cancelled)
            return True
        try:
            prepared = await asyncio.to_thread(prepare_job, self.config, request, self._builtin_tasks, self._eval_sets)
        except JobRefused as exc:
            await self._publisher.fail(record, request.job_id, exc.code, exc.reason, attempt=request.attempt)
            return True
        job = JobRun(
            request, record, prepared, config=self.config, publisher=self._publisher, launch=self._launch,
            gate=self._gate,
        )
        self._current = job
        if self._stopping.is_set():
            job.preempt()
        return await job.run()

    def _on_cancel(self, job_id: str) -> None:
        self._cancelled.add(job_id)
        job = self._current
        if job is not None and job.request.job_id == job_id:
            job.cancel()

    async def release(self, revoked: Sequence[TopicPartition]) -> None:
        """Partitions are being taken away: a job of one of them is checkpointed and stopped first."""
        job = self._current
        if job is not None and job.record.tp in set(revoked):
            job.preempt()
            await job.done.wait()


class _Rebalance:
    def __init__(self, worker: TrainingWorker) -> None:
        self._worker = worker

    async def on_revoked(self, partitions: Sequence[TopicPartition]) -> None:
        await self._worker.release(partitions)

    async def on_assigned(self, partitions: Sequence[TopicPartition]) -> None:
        return None
