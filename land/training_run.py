"""The land's fine-tunes, through training events: in-process training workers (each runs its jobs
as subprocesses), one TrainingRequest per task, a progress bar per job, and the AdapterEvents
the workers publish on the registry.

Jobs are keyed by job_id and the training-requests topic has one partition per worker; the job
ids are chosen so the jobs spread evenly over the partitions (the key decides the partition),
so N workers train N adapters at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiokafka.partitioner import DefaultPartitioner
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from land.spec import LandError
from land.tasks import builtin_train_file
from consumers.training.config import TrainWorkerConfig
from consumers.training.worker import TrainingWorker
from schemas import (
    AdapterEvent,
    DatasetRef,
    InvalidEvent,
    JobState,
    TrainingEvent,
    decode_adapter_event,
)
from streamer import KafkaConfig, RequestTimeout, TopicNames, make_consumer
from streamer.training_client import build_training_request, submit_training
from streamer.transport.kafka import KafkaTransport

_READY_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 60.0
_REGISTRY_TIMEOUT_S = 30.0
_JOB_IDLE_TIMEOUT_S = 600.0  # a job that sends no event this long (worker gone) fails the land


class TrainingFailed(LandError):
    """A land fine-tune ended in `failed` or `cancelled`."""


@dataclass(frozen=True)
class FineTune:
    """One adapter to train: its task, id, training JSONL, TrainingRequest hyperparameters and base."""

    task: str
    adapter_id: str
    train_path: str
    hyperparameters: dict
    base_model: str | None = None  # the base the request names (None: the worker's own)


@dataclass(frozen=True)
class TrainedAdapter:
    task: str
    adapter_id: str
    completed: TrainingEvent  # the job's `completed` event
    registered: AdapterEvent  # what the worker published on the adapters topic


def balanced_job_ids(tasks: Sequence[str], num_partitions: int, salt: str) -> dict[str, str]:
    """A job id per task such that task i's key lands on partition i % num_partitions."""
    partitioner = DefaultPartitioner()
    partitions = list(range(num_partitions))
    job_ids = {}
    for i, task in enumerate(tasks):
        for attempt in range(10_000):
            job_id = f"land-{task}-{salt}-{attempt}"
            if partitioner(job_id.encode(), partitions, partitions) == i % num_partitions:
                job_ids[task] = job_id
                break
        else:
            raise LandError(f"no job id for {task!r} lands on partition {i % num_partitions}")
    return job_ids


@contextlib.asynccontextmanager
async def running_workers(
    kafka: KafkaConfig, topics: TopicNames, configs: Sequence[TrainWorkerConfig]
) -> AsyncIterator[None]:
    """Training workers running on this event loop until the block ends."""
    workers = [
        TrainingWorker(KafkaTransport(kafka), topics, config, builtin_tasks=builtin_train_file) for config in configs
    ]
    runs = [asyncio.create_task(worker.run(), name=f"land-worker-{i}") for i, worker in enumerate(workers)]
    try:
        ready = asyncio.gather(*(worker.ready.wait() for worker in workers))
        done, _ = await asyncio.wait({*runs, ready}, timeout=_READY_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        for run in runs:
            if run in done:
                run.result()  # a worker that ended before it was ready raises its error here
        if ready not in done:
            ready.cancel()
            raise LandError(f"training workers not ready within {_READY_TIMEOUT_S:.0f}s")
        yield
    finally:
        for worker in workers:
            worker.stop()
        await asyncio.wait_for(asyncio.gather(*runs, return_exceptions=True), _STOP_TIMEOUT_S)


async def fine_tune_base(
    kafka: KafkaConfig,
    topics: TopicNames,
    base_dir: Path,
    fine_tunes: Sequence[FineTune],
    run_dir: Path,
    adapter_root: Path,
    num_workers: int,
    console: Console,
) -> list[TrainedAdapter]:
    """`fine_tunes` of the base in `base_dir`, run by `num_workers` training workers of that base
    (started for them, stopped after); jobs under `run_dir`/jobs, data read within `run_dir`/data."""
    worker_configs = [
        TrainWorkerConfig(
            base_model_path=str(base_dir),
            adapter_root=str(adapter_root),
            work_dir=str(run_dir / "jobs"),
            dataset_roots=(str((run_dir / "data").resolve()),),
            device="cpu",
            job_threads=max(1, (os.cpu_count() or 1) // num_workers),
            checkpoint_every_steps=max(max(ft.hyperparameters.get("max_steps", 1) for ft in fine_tunes), 1),
            progress_interval_s=1.0,
            training_partitions=num_workers,
        )
        for _ in range(num_workers)
    ]
    job_ids = balanced_job_ids([ft.task for ft in fine_tunes], num_workers, salt=base_dir.name)
    async with running_workers(kafka, topics, worker_configs):
        return await train_all(kafka, topics, fine_tunes, job_ids, console)


async def train_all(
    kafka: KafkaConfig, topics: TopicNames, fine_tunes: Sequence[FineTune], job_ids: dict[str, str], console: Console
) -> list[TrainedAdapter]:
    """Submit every fine-tune, follow each with a progress bar, then read their AdapterEvents.

    Raises TrainingFailed naming the jobs that did not complete.
    """
    bars = Progress(
        TextColumn("[bold]{task.description:<14}"),
        TextColumn("{task.fields[state]:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"),
        TimeElapsedColumn(),
        console=console,
    )
    with bars:
        finals = await asyncio.gather(*(_train_one(kafka, topics, ft, job_ids[ft.task], bars) for ft in fine_tunes))
    failed = [
        f"{ft.task}: {event.state.value} {event.reason or ''}".strip()
        for ft, event in zip(fine_tunes, finals, strict=True)
        if event.state is not JobState.COMPLETED
    ]
    if failed:
        raise TrainingFailed("fine-tunes did not complete: " + "; ".join(failed))
    registered = await read_registry(kafka, topics, {ft.adapter_id for ft in fine_tunes})
    return [
        TrainedAdapter(ft.task, ft.adapter_id, event, registered[ft.adapter_id])
        for ft, event in zip(fine_tunes, finals, strict=True)
    ]


async def _train_one(
    kafka: KafkaConfig, topics: TopicNames, fine_tune: FineTune, job_id: str, bars: Progress
) -> TrainingEvent:
    request = build_training_request(
        fine_tune.adapter_id,
        DatasetRef(uri=fine_tune.train_path, task=fine_tune.task),
        job_id=job_id,
        base_model=fine_tune.base_model,
        overwrite=True,
        **fine_tune.hyperparameters,
    )
    bar = bars.add_task(fine_tune.task, total=None, state="submitted", loss="")
    async with await submit_training(kafka, topics, request) as job:
        try:
            async for event in job.events(idle_timeout_s=_JOB_IDLE_TIMEOUT_S):
                fields = {"state": event.state.value}
                if event.total_steps is not None:
                    fields["total"] = event.total_steps
                if event.step is not None:
                    fields["completed"] = event.step
                if event.loss is not None:
                    fields["loss"] = f"loss {event.loss:.3f}"
                bars.update(bar, **fields)
        except RequestTimeout:
            raise TrainingFailed(f"{fine_tune.task}: no event for {_JOB_IDLE_TIMEOUT_S:.0f}s") from None
        return job.last_event


async def read_registry(kafka: KafkaConfig, topics: TopicNames, adapter_ids: set[str]) -> dict[str, AdapterEvent]:
    """The latest AdapterEvent of each id, read from the start of the compacted adapters topic."""
    consumer = make_consumer(kafka, topics.adapters, auto_offset_reset="earliest")
    await consumer.start()
    latest: dict[str, AdapterEvent] = {}
    try:
        async with asyncio.timeout(_REGISTRY_TIMEOUT_S):
            while not adapter_ids <= latest.keys():
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for record in records:
                        try:
                            event = decode_adapter_event(record.value or b"")
                        except InvalidEvent:
                            continue
                        latest[event.adapter_id] = event
    except TimeoutError:
        missing = sorted(adapter_ids - latest.keys())
        raise LandError(f"no AdapterEvent for {missing} within {_REGISTRY_TIMEOUT_S:.0f}s") from None
    finally:
        await consumer.stop()
    return latest


def trained_summary(trained: Sequence[TrainedAdapter]) -> dict:
    """Per task, the fine-tune's adapter, its registered version and checksum, and its training result."""
    return {
        t.task: {
            "adapter_id": t.adapter_id,
            "version": t.registered.version,
            "checksum": t.registered.checksum,
            "final_loss": t.completed.loss,
            "metrics": t.completed.metrics,
        }
        for t in trained
    }
