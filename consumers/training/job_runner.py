"""One prepared job, from its process's start to its outcome: the job's events relayed as
TrainingEvents, cancellation and preemption passed on (and the process killed once the grace
period is over), and on `completed` the adapter installed, published and announced.

The job runs behind a `JobHandle`; the worker's default launcher starts
`python -m gpu_engine.training.run_job` (`JobProcess`), and tests launch a scripted one.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import msgspec

from consumers.training.adapter_release import (
    AdapterPublishError,
    VersionRecord,
    announcement,
    install_trained,
    publish_files,
    read_record,
    record_version,
    release_installed,
    served_version,
)
from consumers.training.config import TrainWorkerConfig
from consumers.training.job_log import JobLog
from consumers.training.jobs import PreparedJob, end_run
from consumers.training.publisher import TrainingPublisher
from consumers.training.release_gate import ReleaseGate
from consumers.training.translation import bounded, relayed_event, training_event
from gpu_engine.training.adapter_store import AdapterStoreError, InstalledAdapter
from gpu_engine.training.errors import TrainingError
from gpu_engine.training.events import JobEvent, JobEventKind
from gpu_engine.training.job_process import JobProcess
from schemas import ErrorCode, JobState, TrainingRequest
from schemas.training import ReleaseDecision, ReleaseRule, ReleaseScores
from streamer.transport import Record


class JobHandle(Protocol):
    """A job running elsewhere, as `JobProcess` offers it."""

    async def start(self) -> None: ...
    def events(self) -> AsyncIterator[JobEvent]:
        """Its events, ending with a terminal one."""
        ...
    def cancel(self) -> None: ...
    def preempt(self) -> None: ...
    def kill(self) -> None: ...


JobLauncher = Callable[[PreparedJob, TrainWorkerConfig], JobHandle]


def launch_job_process(prepared: PreparedJob, config: TrainWorkerConfig) -> JobHandle:
    """The job in its own process, logging into its job directory."""
    return JobProcess(
        prepared.job_dir / "spec.json", log_path=prepared.job_dir / "job.log", num_threads=config.job_threads
    )


class JobRun:
    """`await run()` once; `cancel()` / `preempt()` any time, from the event loop."""

    def __init__(
        self,
        request: TrainingRequest,
        record: Record,
        prepared: PreparedJob,
        *,
        config: TrainWorkerConfig,
        publisher: TrainingPublisher,
        launch: JobLauncher,
        gate: ReleaseGate,
    ) -> None:
        self.request, self.record, self.prepared = request, record, prepared
        self._config, self._publisher, self._launch, self._gate = config, publisher, launch, gate
        self._handle: JobHandle | None = None
        self._kill_timer: asyncio.TimerHandle | None = None
        self.cancel_requested = False
        self.preempt_requested = False
        self.done = asyncio.Event()  # set once the job has ended, whatever its outcome
        self._log = JobLog(request, prepared, config.base_name, every_s=config.log_every_s)

    @property
    def attempt(self) -> int:
        return self.prepared.attempt

    def cancel(self) -> None:
        """Stop the job without a checkpoint; its request ends `cancelled`."""
        self.cancel_requested = True
        self._signal()

    def preempt(self) -> None:
        """Checkpoint and stop the job; its request stays uncommitted and resumes on redelivery."""
        self.preempt_requested = True
        self._signal()

    async def run(self) -> bool:
        """True when the request reached a terminal event (it may be committed); False when preempted."""
        try:
            return await self._relay_all()
        except Exception:
            if self._handle is not None:
                self._handle.kill()  # the relay ended early: no job may run on unwatched
            raise
        finally:
            if self._kill_timer is not None:
                self._kill_timer.cancel()
            self.done.set()
            await asyncio.to_thread(end_run, self.prepared.job_dir)

    async def _relay_all(self) -> bool:
        handle = self._launch(self.prepared, self._config)
        await handle.start()
        self._handle = handle
        self._signal()  # a cancel or preemption that came while it started
        async for event in handle.events():
            preempted_then_killed = (
                event.kind is JobEventKind.FAILED and self.preempt_requested and not self.cancel_requested
            )
            if event.kind is JobEventKind.PREEMPTED or preempted_then_killed:
                self._log.ended("preempted", event, "its request stays uncommitted")
                return False
            if event.kind is JobEventKind.COMPLETED:
                self._log.ended(await self._complete(event), event)
                return True
            wire = relayed_event(
                event, job_id=self.request.job_id, attempt=self.attempt, cancel_requested=self.cancel_requested
            )
            if event.is_terminal:
                self._log.ended(wire.state.value, event, wire.reason)
                await self._publisher.settle(wire)
                if wire.state is JobState.FAILED:
                    await self._publisher.dead_letter(self.record, self.request.job_id, wire.code, wire.reason)
                return True
            if event.kind is JobEventKind.STARTED:
                self._log.started(event)
                if self.prepared.notice:
                    wire = msgspec.structs.replace(wire, notice=bounded(self.prepared.notice))
            elif event.kind is JobEventKind.PROGRESS:
                self._log.progress(event)
            await self._publisher.report(wire)
        return True

    async def _complete(self, event: JobEvent) -> str:
        """Install and publish the adapter, evaluate it when asked, announce it when its release
        rule holds; the job's outcome (completed or failed)."""
        request, config = self.request, self._config
        try:
            adapter = await asyncio.to_thread(install_trained, config, request, event.adapter_dir, event.checksum)
        except AdapterStoreError as exc:
            await self._publisher.fail(
                self.record, request.job_id, ErrorCode.INVALID_REQUEST, str(exc), attempt=self.attempt
            )
            return "failed"
        record = await asyncio.to_thread(read_record, adapter)  # a redelivered job's, already evaluated
        if record is None:
            try:
                scores = await self._evaluate(adapter)
                uri = await asyncio.to_thread(publish_files, config, request.adapter_id, adapter)
            except AdapterPublishError as exc:  # the adapter is installed locally; the remote copy failed
                await self._publisher.fail(
                    self.record, request.job_id, ErrorCode.ADAPTER_UNAVAILABLE, str(exc), attempt=self.attempt
                )
                return "failed"
            except (TrainingError, ValueError) as exc:
                reason = f"evaluation failed: {exc}"
                await self._publisher.fail(self.record, request.job_id, ErrorCode.INTERNAL, reason, attempt=self.attempt)
                return "failed"
            record = VersionRecord(uri, config.base_name, self.prepared.spec.r, scores)
            await asyncio.to_thread(record_version, adapter, record)
        scores = record.release
        if scores is None or scores.decision is ReleaseDecision.RELEASED:
            history = await asyncio.to_thread(release_installed, config.adapter_root, request.adapter_id, adapter.version)
            await self._publisher.announce(announcement(request.adapter_id, adapter, history))
        completed = training_event(
            request.job_id,
            JobState.COMPLETED,
            attempt=self.attempt,
            job_event=event,
            adapter_id=request.adapter_id,
            adapter_uri=record.uri,
            checksum=adapter.checksum,
        )
        completed = msgspec.structs.replace(completed, adapter_version=adapter.version, release=scores)
        await self._publisher.settle(completed)
        # the job's saved result now answers a redelivery; its checkpoints are no longer needed
        await asyncio.to_thread(shutil.rmtree, self.prepared.spec.checkpoint_dir, ignore_errors=True)
        return "completed" if scores is None else f"completed, {scores.reason}"

    async def _evaluate(self, adapter: InstalledAdapter) -> ReleaseScores | None:
        """The release gate's scores (None: the request asks for no evaluation)."""
        request = self.request
        if request.evaluation is None:
            return None
        served = None
        if request.release.rule is ReleaseRule.BEAT_SERVED:
            current = await asyncio.to_thread(served_version, self._config.adapter_root, request.adapter_id)
            served = None if current is None else (current.version, current.path)
        evaluating = training_event(request.job_id, JobState.PROGRESS, attempt=self.attempt)
        notice = f"evaluating the candidate for release rule {request.release.rule.value}"
        await self._publisher.report(msgspec.structs.replace(evaluating, notice=notice))
        return await asyncio.to_thread(
            self._gate.evaluate, request, self.prepared.spec, self.prepared.job_dir, adapter.path, served
        )

    def _signal(self) -> None:
        """Pass a cancel or preemption to the job (once it started); kill it after the grace period."""
        if self._handle is None or not (self.cancel_requested or self.preempt_requested):
            return
        if self.cancel_requested:
            self._handle.cancel()
        else:
            self._handle.preempt()
        if self._kill_timer is None:
            self._kill_timer = asyncio.get_running_loop().call_later(self._config.stop_grace_s, self._handle.kill)
