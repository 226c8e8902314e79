"""The whole TrainingWorker through the transport seam, with scripted jobs instead of training.

Each scenario runs against the in-memory bus (milliseconds) and against Apache Kafka (marked
`kafka`): a job that completes, a request that does not decode, a refused request, a cancel on
the control topic, a rebalance while a job runs, and a redelivered finished job. Jobs are
`ScriptedJob`s launched in place of `python -m gpu_engine.training.run_job`: no torch, no
subprocess; what they report is what a real job reports, and a finished one leaves its result
where the real trainer does (`train_result.RESULT_FILE`), so a rerun finds it the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from consumers.training.cancellations import CancelledJobs
from consumers.training.config import TrainWorkerConfig
from consumers.training.jobs import PreparedJob
from consumers.training.worker import TrainingWorker
from gpu_engine.adapter_files import ADAPTER_FILES, adapter_checksum
from gpu_engine.training.events import JobEvent, JobEventKind
from gpu_engine.training.train_result import RESULT_FILE, TrainResult, finished_result
from schemas import (
    CancelJob,
    DatasetRef,
    DeadLetter,
    ErrorCode,
    JobState,
    TrainingEvent,
    TrainingRequest,
    decode,
    decode_adapter_event,
    encode,
)
from streamer import TopicNames
from streamer.transport import TopicPartition, Transport
from streamer.transport.memory import MemoryTransport
from tests.training.task_data import write_task

TIMEOUT_S = 60
TRAINING_PARTITIONS = 2
TOTAL_STEPS = 4


class ScriptedJob:
    """Reports started and one progress; a held job then waits for cancel/preempt, others complete."""

    def __init__(self, prepared: PreparedJob, *, hold: bool, running: asyncio.Event) -> None:
        self.prepared, self.hold, self._running = prepared, hold, running
        self.stop_word: str | None = None
        self.trained = False
        self._stop = asyncio.Event()

    async def start(self) -> None:
        return None

    async def events(self) -> AsyncIterator[JobEvent]:
        spec = self.prepared.spec
        saved = finished_result(spec)
        if saved is not None:  # what run_training does for a spec that already finished
            yield _completed(saved)
            return
        yield JobEvent(JobEventKind.STARTED, total_steps=TOTAL_STEPS, quantization="none", device="cpu")
        yield JobEvent(JobEventKind.PROGRESS, step=1, total_steps=TOTAL_STEPS, loss=2.5, learning_rate=2e-4, eta_s=3.0)
        if self.hold:
            self._running.set()
            await self._stop.wait()
            if self.stop_word == "cancel":
                yield JobEvent(JobEventKind.CANCELLED, code="cancelled", reason="job cancelled at step 1")
            else:
                yield JobEvent(JobEventKind.PREEMPTED, step=1, code="preempted", reason="checkpointed at step 1")
            return
        self.trained = True
        yield _completed(_save_result(spec))

    def cancel(self) -> None:
        self.stop_word = "cancel"
        self._stop.set()

    def preempt(self) -> None:
        self.stop_word = self.stop_word or "preempt"
        self._stop.set()

    def kill(self) -> None:
        self._stop.set()


class ScriptedJobs:
    """The launcher: the first `hold` jobs it launches wait to be stopped; `running` is set when one does."""

    def __init__(self, hold: int = 0) -> None:
        self.hold = hold
        self.launched: list[ScriptedJob] = []
        self.running = asyncio.Event()

    def __call__(self, prepared: PreparedJob, config: TrainWorkerConfig) -> ScriptedJob:
        job = ScriptedJob(prepared, hold=len(self.launched) < self.hold, running=self.running)
        self.launched.append(job)
        return job


def _save_result(spec) -> TrainResult:
    out = Path(spec.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / ADAPTER_FILES[0]).write_text(json.dumps({"r": 8, "lora_alpha": 16}))
    (out / ADAPTER_FILES[1]).write_bytes(b"scripted weights of " + spec.fingerprint().encode())
    result = TrainResult(
        adapter_dir=str(out), checksum=adapter_checksum(out), steps=TOTAL_STEPS, final_loss=1.25, eval_loss=None,
        train_tokens=400, train_time_s=2.0, quantization="none", device="cpu", resumed_from_step=0,
        fingerprint=spec.fingerprint(),
    )  # fmt: skip
    (out / RESULT_FILE).write_text(json.dumps(dataclasses.asdict(result)))
    return result


def _completed(result: TrainResult) -> JobEvent:
    return JobEvent(
        JobEventKind.COMPLETED, step=result.steps, total_steps=result.steps, loss=result.final_loss,
        tokens_per_s=result.tokens_per_s, quantization=result.quantization, adapter_dir=result.adapter_dir,
        checksum=result.checksum, metrics=result.metrics(),
    )  # fmt: skip


@dataclasses.dataclass
class Bus:
    transport: Transport
    topics: TopicNames

    async def send(self, topic: str, value: bytes, key: str) -> None:
        producer = self.transport.producer()
        await producer.start()
        try:
            await (await producer.send(topic, value, key=key.encode()))
        finally:
            await producer.stop()

    async def read_until(self, topic: str, done: Callable[[list[bytes]], bool]) -> list[bytes]:
        """Every value on `topic`, read from the beginning until `done(values)`."""
        reader = self.transport.reader(topic)
        await reader.start()
        values: list[bytes] = []
        try:
            await reader.seek_to_beginning()
            async with asyncio.timeout(TIMEOUT_S):
                while not done(values):
                    for records in (await reader.poll(timeout_ms=100)).values():
                        values.extend(r.value for r in records)
        finally:
            await reader.stop()
        return values

    async def job_events(self, job_id: str, done: Callable[[list[TrainingEvent]], bool]) -> list[TrainingEvent]:
        def of_job(values: list[bytes]) -> list[TrainingEvent]:
            return [e for e in (decode(v, TrainingEvent) for v in values) if e.job_id == job_id]

        return of_job(await self.read_until(self.topics.training_events, lambda values: done(of_job(values))))

    async def committed(self, group_id: str) -> int:
        """The group's committed offsets on the training-requests topic, summed."""
        tps = [TopicPartition(self.topics.training_requests, p) for p in range(TRAINING_PARTITIONS)]
        consumer = self.transport.group_consumer([self.topics.training_requests], group_id=group_id, listener=_NoListener())
        try:
            offsets = await consumer.committed(tps)
        finally:
            await consumer.stop()
        return sum(meta.offset for meta in offsets.values() if meta is not None)

    async def wait_committed(self, group_id: str, expected: int) -> None:
        async with asyncio.timeout(TIMEOUT_S):
            while (committed := await self.committed(group_id)) < expected:
                await asyncio.sleep(0.05)
        assert committed == expected


class _NoListener:
    async def on_revoked(self, partitions) -> None:
        return None

    async def on_assigned(self, partitions) -> None:
        return None


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.kafka)])
def bus(request: pytest.FixtureRequest, topic_names: TopicNames) -> Bus:
    if request.param == "memory":
        return Bus(MemoryTransport(), topic_names)
    from streamer.transport.kafka import KafkaTransport

    return Bus(KafkaTransport(request.getfixturevalue("kafka_config")), topic_names)


@pytest.fixture
def config(tmp_path: Path) -> TrainWorkerConfig:
    write_task(tmp_path / "data" / "task.jsonl", n=8)
    return TrainWorkerConfig(
        base_model_path=str(tmp_path / "tiny"), adapter_root=str(tmp_path / "adapters"), work_dir=str(tmp_path / "jobs"),
        dataset_roots=(str(tmp_path / "data"),), training_partitions=TRAINING_PARTITIONS, stop_grace_s=TIMEOUT_S,
    )  # fmt: skip


def _request(config: TrainWorkerConfig, job_id: str, **fields) -> TrainingRequest:
    fields.setdefault("dataset", DatasetRef(uri=str(Path(config.dataset_roots[0]) / "task.jsonl")))
    return TrainingRequest(job_id=job_id, adapter_id=f"acme/{job_id}", **fields)


@contextlib.asynccontextmanager
async def running(worker: TrainingWorker) -> AsyncIterator[TrainingWorker]:
    task = asyncio.create_task(worker.run())
    ready = asyncio.create_task(worker.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    assert ready in done, "worker not ready"
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, TIMEOUT_S)


def _terminal(events: list[TrainingEvent]) -> bool:
    return any(e.state in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED) for e in events)


async def test_a_job_completes_announces_its_adapter_and_is_committed(bus: Bus, config) -> None:
    jobs = ScriptedJobs()
    async with running(TrainingWorker(bus.transport, bus.topics, config, launch=jobs)):
        await bus.send(bus.topics.training_requests, encode(_request(config, "job-ok")), key="job-ok")
        events = await bus.job_events("job-ok", _terminal)
        announced = await bus.read_until(bus.topics.adapters, lambda values: len(values) >= 1)
        await bus.wait_committed(config.group_id, 1)
    assert [e.state for e in events] == [JobState.QUEUED, JobState.STARTED, JobState.PROGRESS, JobState.COMPLETED]
    progress, completed = events[2], events[3]
    assert (progress.step, progress.total_steps, progress.loss, progress.eta_s) == (1, TOTAL_STEPS, 2.5, 3.0)
    assert completed.adapter_id == "acme/job-ok" and completed.code is None and completed.step == TOTAL_STEPS
    adapter = decode_adapter_event(announced[0])
    assert (adapter.adapter_id, adapter.version, adapter.checksum) == ("acme/job-ok", 1, completed.checksum)
    assert adapter.uri == completed.adapter_uri and adapter.base_model == "tiny"
    assert adapter_checksum(Path(config.adapter_root) / "acme" / "job-ok") == completed.checksum
    assert len(jobs.launched) == 1 and jobs.launched[0].trained


async def test_undecodable_requests_are_dead_lettered_and_committed(bus: Bus, config) -> None:
    jobs = ScriptedJobs()
    async with running(TrainingWorker(bus.transport, bus.topics, config, launch=jobs)):
        await bus.send(bus.topics.training_requests, b'{"kind": "train", "job_id"', key="garbage")
        await bus.send(bus.topics.training_requests, b'{"kind": "train", "job_id": "half-1"}', key="half-1")
        letters = [decode(v, DeadLetter) for v in await bus.read_until(bus.topics.requests_dlq, lambda v: len(v) >= 2)]
        events = await bus.job_events("half-1", _terminal)
        await bus.wait_committed(config.group_id, 2)
    assert sorted((letter.request_id or "", letter.code) for letter in letters) == [
        ("", ErrorCode.MALFORMED),
        ("half-1", ErrorCode.INVALID_REQUEST),
    ]
    assert [(e.state, e.code) for e in events] == [(JobState.FAILED, ErrorCode.INVALID_REQUEST)]
    assert jobs.launched == []


async def test_a_refused_request_fails_with_its_code_and_a_dead_letter(bus: Bus, config) -> None:
    jobs = ScriptedJobs()
    refused = _request(config, "job-refused", dataset=DatasetRef(uri="/etc/hostname"))
    async with running(TrainingWorker(bus.transport, bus.topics, config, launch=jobs)):
        await bus.send(bus.topics.training_requests, encode(refused), key="job-refused")
        events = await bus.job_events("job-refused", _terminal)
        letters = [decode(v, DeadLetter) for v in await bus.read_until(bus.topics.requests_dlq, lambda v: len(v) >= 1)]
        await bus.wait_committed(config.group_id, 1)
    assert [e.state for e in events] == [JobState.QUEUED, JobState.FAILED]
    assert events[-1].code is ErrorCode.DATASET_REFUSED and "outside the worker's dataset roots" in events[-1].reason
    assert [(letter.request_id, letter.code) for letter in letters] == [("job-refused", ErrorCode.DATASET_REFUSED)]
    assert letters[0].original == encode(refused)
    assert jobs.launched == []


async def test_a_cancel_on_the_control_topic_ends_the_running_job_as_cancelled(bus: Bus, config) -> None:
    jobs = ScriptedJobs(hold=1)
    async with running(TrainingWorker(bus.transport, bus.topics, config, launch=jobs)):
        await bus.send(bus.topics.training_requests, encode(_request(config, "job-cancel")), key="job-cancel")
        async with asyncio.timeout(TIMEOUT_S):
            await jobs.running.wait()
        await bus.send(bus.topics.control, encode(CancelJob(job_id="job-cancel")), key="job-cancel")
        events = await bus.job_events("job-cancel", _terminal)
        await bus.wait_committed(config.group_id, 1)
    assert [e.state for e in events] == [JobState.QUEUED, JobState.STARTED, JobState.PROGRESS, JobState.CANCELLED]
    assert events[-1].code is ErrorCode.CANCELLED and events[-1].reason == "job cancelled at step 1"
    assert [job.stop_word for job in jobs.launched] == ["cancel"]
    assert not (Path(config.adapter_root) / "acme" / "job-cancel").exists()


async def test_a_rebalance_preempts_the_running_job_and_its_redelivery_completes_it(bus: Bus, config) -> None:
    jobs = ScriptedJobs(hold=1)
    async with running(TrainingWorker(bus.transport, bus.topics, config, launch=jobs)):
        await bus.send(bus.topics.training_requests, encode(_request(config, "job-moved")), key="job-moved")
        async with asyncio.timeout(TIMEOUT_S):
            await jobs.running.wait()
        async with running(TrainingWorker(bus.transport, bus.topics, config, launch=jobs)):  # joins: rebalance
            events = await bus.job_events("job-moved", _terminal)
            await bus.wait_committed(config.group_id, 1)
    assert [job.stop_word for job in jobs.launched] == ["preempt", None]
    assert [e.state for e in events if e.state is not JobState.QUEUED] == [
        JobState.STARTED, JobState.PROGRESS, JobState.STARTED, JobState.PROGRESS, JobState.COMPLETED,
    ]  # fmt: skip
    assert events[-1].attempt == 1  # the second run of the job


async def test_a_redelivered_finished_job_republishes_its_result_without_retraining(bus: Bus, config) -> None:
    jobs = ScriptedJobs()
    request = encode(_request(config, "job-twice"))
    async with running(TrainingWorker(bus.transport, bus.topics, config, launch=jobs)):
        await bus.send(bus.topics.training_requests, request, key="job-twice")
        await bus.job_events("job-twice", _terminal)
        await bus.send(bus.topics.training_requests, request, key="job-twice")  # delivered again
        events = await bus.job_events("job-twice", lambda es: sum(e.state is JobState.COMPLETED for e in es) == 2)
        announced = await bus.read_until(bus.topics.adapters, lambda values: len(values) >= 2)
        await bus.wait_committed(config.group_id, 2)
    first, second = [e for e in events if e.state is JobState.COMPLETED]
    assert [job.trained for job in jobs.launched] == [True, False]
    assert (second.checksum, second.adapter_uri) == (first.checksum, first.adapter_uri)
    assert (first.attempt, second.attempt) == (0, 1)
    assert [decode_adapter_event(v).version for v in announced] == [1, 1]  # the same version, not a new one


async def test_a_job_cancelled_before_it_is_fetched_never_starts(bus: Bus, config) -> None:
    jobs = ScriptedJobs()
    async with running(TrainingWorker(bus.transport, bus.topics, config, launch=jobs)):
        await bus.send(bus.topics.control, encode(CancelJob(job_id="job-early")), key="job-early")
        await bus.send(bus.topics.control, b"not a control event", key="noise")  # logged, ignored
        # a request answered after the cancel was sent: the control listener, polling meanwhile, has it
        await bus.send(bus.topics.training_requests, b"{}", key="probe")
        await bus.read_until(bus.topics.requests_dlq, lambda values: len(values) >= 1)
        await bus.send(bus.topics.training_requests, encode(_request(config, "job-early")), key="job-early")
        events = await bus.job_events("job-early", _terminal)
        await bus.wait_committed(config.group_id, 2)
    assert [(e.state, e.code) for e in events] == [(JobState.QUEUED, None), (JobState.CANCELLED, ErrorCode.CANCELLED)]
    assert jobs.launched == []


@pytest.mark.parametrize(
    ("capacity", "added", "remembered"),
    [(2, ["a", "b", "c"], {"b", "c"}), (2, ["a", "b", "a", "c"], {"a", "c"}), (1, ["a"], {"a"})],
)
def test_cancelled_jobs_remember_the_most_recent(capacity, added, remembered) -> None:
    cancelled = CancelledJobs(capacity)
    for job_id in added:
        cancelled.add(job_id)
    assert {job_id for job_id in "abc" if job_id in cancelled} == remembered


def _lane_config(config: TrainWorkerConfig, base: str) -> TrainWorkerConfig:
    """A worker of base `base` in its own training lane, with its own job and adapter directories."""
    root = Path(config.work_dir).parent / base
    return dataclasses.replace(
        config, base_model_name=base, base_lane=True, work_dir=str(root / "jobs"), adapter_root=str(root / "adapters")
    )


async def test_each_lane_worker_takes_only_its_own_bases_jobs(bus: Bus, config) -> None:
    """Two workers of two bases, each in its lane: each job is run by its own base's worker and
    announced for that base; a job for another base written into a lane by hand is refused there."""
    alpha, beta = _lane_config(config, "alpha"), _lane_config(config, "beta")
    jobs = {"alpha": ScriptedJobs(), "beta": ScriptedJobs()}
    sent = [("job-a1", "alpha", "alpha"), ("job-b1", "beta", "beta"), ("job-a2", "alpha", None), ("job-x", "alpha", "beta")]
    async with (
        running(TrainingWorker(bus.transport, bus.topics, alpha, launch=jobs["alpha"])),
        running(TrainingWorker(bus.transport, bus.topics, beta, launch=jobs["beta"])),
    ):
        for job_id, lane, base_model in sent:
            request = encode(_request(config, job_id, base_model=base_model))
            await bus.send(bus.topics.training_requests_for(lane), request, key=job_id)
        terminal = {job_id: (await bus.job_events(job_id, _terminal))[-1] for job_id, _, _ in sent}
        announced = [decode_adapter_event(v) for v in await bus.read_until(bus.topics.adapters, lambda v: len(v) >= 3)]
    assert {job_id: e.state for job_id, e in terminal.items()} == {
        "job-a1": JobState.COMPLETED, "job-b1": JobState.COMPLETED, "job-a2": JobState.COMPLETED, "job-x": JobState.FAILED,
    }  # fmt: skip
    assert "unknown base model 'beta'" in terminal["job-x"].reason
    assert {base: sorted(Path(j.prepared.job_dir).name for j in js.launched) for base, js in jobs.items()} == {
        "alpha": ["job-a1", "job-a2"], "beta": ["job-b1"],
    }  # fmt: skip
    assert sorted((a.adapter_id, a.base_model) for a in announced) == [
        ("acme/job-a1", "alpha"), ("acme/job-a2", "alpha"), ("acme/job-b1", "beta"),
    ]  # fmt: skip
    assert await bus.committed(config.group_id) == 0  # the shared topic's group saw nothing


@pytest.mark.parametrize(
    ("base_lane", "topic", "group"),
    [(False, "p.training.requests", "g"), (True, "p.training.requests.base.alpha", "g.alpha")],
)
def test_a_lane_worker_reads_its_bases_topic_in_its_own_group(config, base_lane, topic, group) -> None:
    lane = dataclasses.replace(config, base_model_name="alpha", group_id="g", base_lane=base_lane)
    assert (lane.requests_topic(TopicNames("p")), lane.consumer_group) == (topic, group)


@pytest.mark.parametrize("base", ["org/model", "a:b", "..", "x" * 250])
def test_a_lane_needs_a_topic_safe_base_name(config, base) -> None:
    with pytest.raises(ValueError, match="cannot name a topic"):
        dataclasses.replace(config, base_model_name=base, base_lane=True)
    assert dataclasses.replace(config, base_model_name=base).requests_topic(TopicNames("p")) == "p.training.requests"


@pytest.mark.kafka
async def test_submit_training_sends_a_job_to_its_bases_lane_when_there_is_one(kafka_config, topic_names, config) -> None:
    """`submit_training` on Apache Kafka: jobs for alpha and beta go to their lanes and are run by
    their own workers; a base without a lane (gamma, or a path) uses the shared topic, where the
    shared worker (of alpha) refuses gamma with a typed failure."""
    from streamer.transport.kafka import KafkaTransport
    from streamer.training_client import build_training_request, submit_training, training_requests_topic

    bus = Bus(KafkaTransport(kafka_config), topic_names)
    shared = dataclasses.replace(config, base_model_name="alpha")
    alpha, beta = _lane_config(config, "alpha"), _lane_config(config, "beta")
    jobs = {name: ScriptedJobs() for name in ("alpha", "beta", "shared")}
    dataset = str(Path(config.dataset_roots[0]) / "task.jsonl")
    async with (
        running(TrainingWorker(bus.transport, bus.topics, alpha, launch=jobs["alpha"])),
        running(TrainingWorker(bus.transport, bus.topics, beta, launch=jobs["beta"])),
        running(TrainingWorker(bus.transport, bus.topics, shared, launch=jobs["shared"])),
    ):
        outcomes = {}
        for job_id, base in [("job-a", "alpha"), ("job-b", "beta"), ("job-g", "gamma")]:
            request = build_training_request(f"acme/{job_id}", dataset, job_id=job_id, base_model=base)
            async with await submit_training(kafka_config, topic_names, request) as job:
                outcomes[job_id] = (job.requests_topic, await job.wait(idle_timeout_s=TIMEOUT_S))
        assert await training_requests_topic(kafka_config, topic_names, "/models/alpha") == topic_names.training_requests
        assert await training_requests_topic(kafka_config, topic_names, None) == topic_names.training_requests
    assert {job_id: (topic, event.state) for job_id, (topic, event) in outcomes.items()} == {
        "job-a": (topic_names.training_requests_for("alpha"), JobState.COMPLETED),
        "job-b": (topic_names.training_requests_for("beta"), JobState.COMPLETED),
        "job-g": (topic_names.training_requests, JobState.FAILED),
    }
    assert "unknown base model 'gamma'" in outcomes["job-g"][1].reason
    assert {name: [Path(j.prepared.job_dir).name for j in js.launched] for name, js in jobs.items()} == {
        "alpha": ["job-a"], "beta": ["job-b"], "shared": [],
    }  # fmt: skip
