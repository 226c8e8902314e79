"""The training worker: TrainingRequests in (one consumer group), one job subprocess at a time,
TrainingEvents out (keyed by job_id), adapters into the adapter root, AdapterEvents on the registry.

Per request: decode → `queued` → validate off the event loop (base, dataset within the roots and
caps, hyperparameters, adapter id free) → run `python -m gpu_engine.training.run_job` and relay
its events → on `completed` install the adapter atomically and publish an AdapterEvent → the
terminal event is acknowledged → commit. A request that ends in failure — bad bytes, a refusal,
a failed job, or any exception on the way — gets a `failed` event with its code (when a job_id
can be read) and a dead letter, and is committed: no record stops the worker.

A job's files live in `<work_dir>/<job_id>/`, so a redelivered request (crash, rebalance, stop)
resumes from the job's last checkpoint, and a redelivered finished job republishes its result; a
request whose runs keep dying with the worker is given up after `max_unfinished_runs`. While a
job runs every partition is paused and the consumer keeps
polling, so group membership survives jobs longer than max_poll_interval_ms.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections import OrderedDict
from pathlib import Path

import msgspec
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from consumers.training.jobs import (
    AdapterPublishError,
    JobRefused,
    PreparedJob,
    TrainWorkerConfig,
    end_run,
    now_ms,
    prepare_job,
    salvage_job_id,
    training_wire_code,
)
from gpu_engine.training import (
    JobEvent,
    JobEventKind,
    adapter_checksum,
)
from gpu_engine.training.adapter_store import (
    AdapterStoreError,
    InstalledAdapter,
    install_adapter,
    installed,
)
from gpu_engine.training.job_process import JobProcess
from schemas import (
    AdapterEvent,
    CancelJob,
    ErrorCode,
    InvalidEvent,
    JobState,
    LorastreamError,
    TrainingEvent,
    TrainingRequest,
    decode_control,
    decode_training_request,
    encode,
)
from schemas.deadletter import dead_letter
from streamer import (
    KafkaConfig,
    TopicNames,
    default_topic_specs,
    describe_topics,
    ensure_topics,
    retry_transient,
    start_consumer,
    start_producer,
)

log = logging.getLogger(__name__)

_POLL_MS = 200
_BUSY_POLL_S = 1.0  # while a job runs: how often the (paused) consumer polls to stay in the group
_MAX_REMEMBERED_CANCELS = 1024
_MAX_REASON_CHARS = 1000


class _RunningJob:
    def __init__(self, request: TrainingRequest, tp: TopicPartition, record, prepared: PreparedJob) -> None:
        self.request, self.tp, self.record, self.attempt = request, tp, record, prepared.attempt
        self.checkpoint_dir = prepared.spec.checkpoint_dir
        self.process: JobProcess | None = None
        self.kill_timer: asyncio.TimerHandle | None = None
        self.cancel_requested = False
        self.preempt_requested = False
        self.done = asyncio.Event()


class TrainingWorker:
    """`await worker.run()` until `stop()`; `ready` is set once it consumes and listens for cancels."""

    def __init__(self, kafka: KafkaConfig, topics: TopicNames, config: TrainWorkerConfig) -> None:
        self.kafka, self.topics, self.config = kafka, topics, config
        self.ready = asyncio.Event()
        self._stopping = asyncio.Event()
        self._producer = None
        self._consumer = None
        self._current: _RunningJob | None = None
        self._cancelled: OrderedDict[str, None] = OrderedDict()

    def stop(self) -> None:
        """Stop consuming; a running job is checkpointed and left uncommitted (it resumes elsewhere)."""
        self._stopping.set()
        self._preempt_current()

    async def run(self) -> None:
        await ensure_topics(
            self.kafka, default_topic_specs(self.topics, training_partitions=self.config.training_partitions)
        )
        self._producer = await start_producer(self.kafka)
        control = None
        try:
            self._consumer = await start_consumer(self.kafka, group_id=self.config.group_id)
            self._consumer.subscribe([self.topics.training_requests], listener=_Rebalance(self))
            control = await start_consumer(self.kafka)
            control_task = asyncio.create_task(self._listen_for_cancels(control), name="training-control")
            self.ready.set()
            try:
                while not self._stopping.is_set():
                    batch = await self._consumer.getmany(timeout_ms=_POLL_MS, max_records=1)
                    for tp, records in batch.items():
                        for record in records:
                            await self._process(tp, record)
            finally:
                control_task.cancel()
                await asyncio.gather(control_task, return_exceptions=True)
        finally:
            for client in (control, self._consumer):
                if client is not None:
                    await client.stop()
            await self._producer.stop()

    async def _process(self, tp: TopicPartition, record) -> None:
        """Handle one request while the consumer, paused, keeps polling; commit when it ended."""
        task = asyncio.create_task(self._handle(tp, record))
        consumer = self._consumer
        consumer.pause(*consumer.assignment())
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=_BUSY_POLL_S)
                for other_tp, records in (await consumer.getmany(timeout_ms=0)).items():
                    consumer.seek(other_tp, records[0].offset)  # newly assigned while busy: later
                    consumer.pause(other_tp)
            finished = task.result()
        finally:
            consumer.resume(*consumer.assignment())
        if finished and tp in consumer.assignment():
            try:
                await consumer.commit({tp: record.offset + 1})
            except KafkaError as exc:  # rebalanced meanwhile: the redelivery republishes the result
                log.warning("commit of %s@%d failed: %r", tp, record.offset, exc)

    async def _handle(self, tp: TopicPartition, record) -> bool:
        """True when the request reached a terminal event (and may be committed)."""
        try:
            request = decode_training_request(record.value or b"")
        except InvalidEvent as exc:
            await self._fail(tp, record, salvage_job_id(record.value), exc.code, exc.message)
            return True
        try:
            return await self._serve(tp, record, request)
        except Exception as exc:  # a bug or a resource failure: a typed failure, never a worker exit
            log.exception("training job %s failed unexpectedly", request.job_id)
            attempt = self._current.attempt if self._current is not None else request.attempt
            await self._fail(
                tp, record, request.job_id, ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}", attempt=attempt
            )
            return True
        finally:
            self._current = None

    async def _serve(self, tp: TopicPartition, record, request: TrainingRequest) -> bool:
        await self._publish(self._event(request, JobState.QUEUED))
        if request.job_id in self._cancelled:
            await self._publish(
                self._event(
                    request, JobState.CANCELLED, code=ErrorCode.CANCELLED, reason="cancelled before it started"
                ),
                ack=True,
            )
            return True
        try:
            prepared = await asyncio.to_thread(prepare_job, self.config, request)
        except JobRefused as exc:
            await self._fail(tp, record, request.job_id, exc.code, exc.reason, attempt=request.attempt)
            return True
        job = _RunningJob(request, tp, record, prepared)
        self._current = job
        try:
            return await self._run_job(job, prepared)
        except Exception:
            if job.process is not None:
                job.process.kill()  # the relay ended early: no job may run on unwatched
            raise
        finally:
            if job.kill_timer is not None:
                job.kill_timer.cancel()
            job.done.set()
            await asyncio.to_thread(end_run, prepared.job_dir)

    async def _run_job(self, job: _RunningJob, prepared: PreparedJob) -> bool:
        request = job.request
        job.process = JobProcess(
            prepared.job_dir / "spec.json", log_path=prepared.job_dir / "job.log", num_threads=self.config.job_threads
        )
        await job.process.start()
        if job.cancel_requested or job.preempt_requested or self._stopping.is_set():
            self._cancel_or_preempt(job)
        async for event in job.process.events():
            killed_while_preempted = (
                event.kind is JobEventKind.FAILED and job.preempt_requested and not job.cancel_requested
            )
            if event.kind is JobEventKind.PREEMPTED or killed_while_preempted:
                log.info("job %s preempted at step %s; its request stays uncommitted", request.job_id, event.step)
                return False
            if event.kind is JobEventKind.COMPLETED:
                await self._complete(job, event)
                return True
            await self._relay(job, event)
        return True

    async def _relay(self, job: _RunningJob, event: JobEvent) -> None:
        if event.kind is JobEventKind.FAILED and job.cancel_requested:
            state, code = JobState.CANCELLED, ErrorCode.CANCELLED  # killed after the grace period
        elif event.kind is JobEventKind.FAILED:
            state, code = JobState.FAILED, training_wire_code(event.code)
        else:
            state = JobState(event.kind.value)
            code = ErrorCode.CANCELLED if state is JobState.CANCELLED else None
        reason = f"{event.code}: {event.reason}" if state is JobState.FAILED else event.reason
        terminal = state in (JobState.FAILED, JobState.CANCELLED)
        await self._publish(
            self._event(
                job.request,
                state,
                attempt=job.attempt,
                step=event.step,
                total_steps=event.total_steps,
                loss=event.loss,
                eval_loss=event.eval_loss,
                learning_rate=event.learning_rate,
                tokens_per_s=event.tokens_per_s,
                eta_s=event.eta_s,
                quantization=event.quantization,
                metrics=event.metrics,
                code=code if terminal else None,
                reason=reason if terminal else None,
            ),
            ack=terminal,
        )
        if state is JobState.FAILED:
            await self._dead_letter(job.tp, job.record, job.request.job_id, code, reason)

    async def _complete(self, job: _RunningJob, event: JobEvent) -> None:
        request = job.request
        try:
            adapter = await asyncio.to_thread(self._install, request, event)
        except AdapterStoreError as exc:
            await self._fail(
                job.tp, job.record, request.job_id, ErrorCode.INVALID_REQUEST, str(exc), attempt=job.attempt
            )
            return
        try:
            uri = await asyncio.to_thread(self._publish_files, request.adapter_id, adapter)
        except LorastreamError as exc:  # the adapter is installed locally; the remote copy failed
            await self._fail(
                job.tp, job.record, request.job_id, ErrorCode.ADAPTER_UNAVAILABLE, str(exc), attempt=job.attempt
            )
            return
        await self._publish_to(
            self.topics.adapters,
            request.adapter_id,
            AdapterEvent(
                adapter_id=request.adapter_id,
                version=adapter.version,
                uri=uri,
                checksum=adapter.checksum,
                base_model=self.config.base_name,
                rank=request.hyperparameters.r,
                ts_ms=now_ms(),
            ),
        )
        await self._publish(
            self._event(
                request,
                JobState.COMPLETED,
                attempt=job.attempt,
                step=event.step,
                total_steps=event.total_steps,
                loss=event.loss,
                eval_loss=event.eval_loss,
                tokens_per_s=event.tokens_per_s,
                quantization=event.quantization,
                adapter_id=request.adapter_id,
                adapter_uri=uri,
                checksum=adapter.checksum,
                metrics=event.metrics,
            ),
            ack=True,
        )
        # the job's saved result now answers a redelivery; its checkpoints are no longer needed
        await asyncio.to_thread(shutil.rmtree, job.checkpoint_dir, ignore_errors=True)

    def _publish_files(self, adapter_id: str, adapter: InstalledAdapter) -> str:
        """The uri to announce: the local directory, or its upload under `publish_uri` (one key per version)."""
        if self.config.publish_uri is None:
            return Path(adapter.path).as_uri()
        from gpu_engine.errors import EngineError
        from gpu_engine.store import S3Fetcher
        from gpu_engine.uris import parse_s3_uri

        try:
            location = parse_s3_uri(self.config.publish_uri).child(adapter_id).child(f"v{adapter.version}")
            S3Fetcher(endpoint_url=self.config.s3_endpoint_url).upload(Path(adapter.path), location)
        except EngineError as exc:
            raise AdapterPublishError(str(exc)) from exc
        return str(location)

    def _install(self, request: TrainingRequest, event: JobEvent) -> InstalledAdapter:
        previous = installed(self.config.adapter_root, request.adapter_id)
        if (
            previous is not None
            and previous.job_id == request.job_id
            and previous.checksum == event.checksum
            and adapter_checksum(previous.path) == event.checksum
        ):
            return previous  # a redelivered job that had already installed its adapter
        replaces_own = previous is not None and previous.job_id == request.job_id
        return install_adapter(
            event.adapter_dir,
            self.config.adapter_root,
            request.adapter_id,
            job_id=request.job_id,
            checksum=event.checksum,
            overwrite=request.overwrite or replaces_own,
        )

    def _event(
        self, request: TrainingRequest, state: JobState, *, attempt: int | None = None, **fields
    ) -> TrainingEvent:
        if fields.get("reason") is not None:
            fields["reason"] = _bounded(fields["reason"])
        return TrainingEvent(
            job_id=request.job_id,
            state=state,
            ts_ms=now_ms(),
            attempt=request.attempt if attempt is None else attempt,
            **{k: v for k, v in fields.items() if v is not None},
        )

    async def _publish(self, event: TrainingEvent, *, ack: bool = False) -> None:
        """On the training-events topic keyed by job_id; `ack`: wait until the broker has it."""
        if ack:
            await self._publish_to(self.topics.training_events, event.job_id, event)
        else:
            delivery = await self._producer.send(self.topics.training_events, encode(event), key=event.job_id.encode())
            delivery.add_done_callback(_log_lost_event)

    async def _publish_to(self, topic: str, key: str, event: msgspec.Struct) -> None:
        value = encode(event)
        await retry_transient(
            lambda: self._producer.send_and_wait(topic, value, key=key.encode()), what=f"publish to {topic}"
        )

    async def _fail(
        self, tp: TopicPartition, record, job_id: str | None, code: ErrorCode, reason: str, *, attempt: int = 0
    ) -> None:
        """A request ends in failure: a `failed` event (when a job_id could be read) and a dead letter."""
        if job_id is not None:
            await self._publish(
                TrainingEvent(
                    job_id=job_id,
                    state=JobState.FAILED,
                    ts_ms=now_ms(),
                    attempt=attempt,
                    code=code,
                    reason=_bounded(reason),
                ),
                ack=True,
            )
        await self._dead_letter(tp, record, job_id, code, reason)

    async def _dead_letter(self, tp: TopicPartition, record, job_id: str | None, code: ErrorCode, reason: str) -> None:
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
            await self._publish_to(self.topics.requests_dlq, job_id or "", letter)
        except Exception as exc:  # the failure is answered already; a lost copy must not stop the worker
            log.error("dead letter for %s@%d not delivered: %r", tp, record.offset, exc)

    async def _listen_for_cancels(self, control) -> None:
        """Every partition of the control topic, from its end: CancelJob for any job id."""
        infos = await describe_topics(self.kafka, [self.topics.control])
        tps = [TopicPartition(self.topics.control, p) for info in infos for p in range(info.partitions)]
        control.assign(tps)
        await control.seek_to_end(*tps)
        while True:
            for records in (await control.getmany(timeout_ms=_POLL_MS)).values():
                for record in records:
                    try:
                        event = decode_control(record.value or b"")
                    except InvalidEvent as exc:
                        log.warning("ignoring control record at %d: %s", record.offset, exc)
                        continue
                    if isinstance(event, CancelJob):
                        self._on_cancel(event.job_id)

    def _on_cancel(self, job_id: str) -> None:
        self._cancelled[job_id] = None
        while len(self._cancelled) > _MAX_REMEMBERED_CANCELS:
            self._cancelled.popitem(last=False)
        job = self._current
        if job is not None and job.request.job_id == job_id:
            job.cancel_requested = True
            self._cancel_or_preempt(job)

    def _preempt_current(self) -> None:
        job = self._current
        if job is not None:
            job.preempt_requested = True
            self._cancel_or_preempt(job)

    def _cancel_or_preempt(self, job: _RunningJob) -> None:
        """Send the request to the job process (if it started); kill it after the grace period."""
        if job.process is None or job.process.pid is None:
            return
        if job.cancel_requested:
            job.process.cancel()
        else:
            job.process.preempt()
        if job.kill_timer is None:
            job.kill_timer = asyncio.get_running_loop().call_later(self.config.stop_grace_s, job.process.kill)

    async def release(self, revoked: set[TopicPartition]) -> None:
        """Partitions are being taken away: a job of one of them is checkpointed and stopped first."""
        job = self._current
        if job is not None and job.tp in revoked:
            self._preempt_current()
            await job.done.wait()


def _bounded(reason: str) -> str:
    return reason if len(reason) <= _MAX_REASON_CHARS else reason[: _MAX_REASON_CHARS - 1] + "…"


def _log_lost_event(delivery: asyncio.Future) -> None:
    if not delivery.cancelled() and delivery.exception() is not None:
        log.warning("a progress event was not delivered: %r", delivery.exception())


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: TrainingWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked) -> None:
        await self.worker.release(set(revoked))

    async def on_partitions_assigned(self, assigned) -> None:
        return None
