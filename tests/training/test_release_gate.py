"""The release gate's parts: the rule (table-driven), the request checks, the adapter store's kept
versions and release history, the registry's revision order, and the worker deciding in memory
with scripted jobs and scripted answers (the real engine and Kafka: tests/integration/test_release_gate.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import msgspec
import pytest

from cli.release_commands import release_summary
from cli.train_eval_sets import land_eval_sets
from consumers.inference.adapters_topic import AdaptersTopicFollower
from consumers.training.adapter_release import promote, read_record, rollback
from consumers.training.release_gate import CANDIDATE, EvalSource, check_release, decide
from consumers.training.worker import TrainingWorker
from gpu_engine.adapter_files import ADAPTER_FILES, adapter_checksum
from gpu_engine.training.adapter_store import (
    AdapterStoreError,
    install_adapter,
    installed,
    installed_versions,
    release_history,
    release_version,
    roll_back,
)
from gpu_engine.training.candidate_eval import BASE
from schemas import AdapterEvent, DatasetRef, JobState, TrainingEvent, TrainingRequest, decode_adapter_event, encode
from schemas.training import Evaluation, Release, ReleaseDecision, ReleaseRule
from streamer.transport.memory import MemoryTransport
from tests.training.task_data import write_task
from tests.training.test_training_worker_scenarios import Bus, ScriptedJobs, _terminal, running

R, K = ReleaseDecision.RELEASED, ReleaseDecision.KEPT


@pytest.mark.parametrize(
    "rule, margin, candidate, base, served, expected",
    [
        (ReleaseRule.ALWAYS, 0.0, None, None, None, R),
        (ReleaseRule.ALWAYS, 50.0, 0.0, 90.0, None, R),  # always ignores the scores
        (ReleaseRule.BEAT_BASE, 0.0, 61.0, 60.0, None, R),
        (ReleaseRule.BEAT_BASE, 0.0, 60.0, 60.0, None, K),  # a tie does not beat
        (ReleaseRule.BEAT_BASE, 5.0, 64.0, 60.0, None, K),
        (ReleaseRule.BEAT_BASE, 5.0, 65.5, 60.0, None, R),
        (ReleaseRule.BEAT_BASE, -10.0, 55.0, 60.0, None, R),  # a negative margin tolerates a loss
        (ReleaseRule.BEAT_BASE, 0.0, 70.0, 60.0, 90.0, R),  # beat_base never looks at the served version
        (ReleaseRule.BEAT_SERVED, 0.0, 70.0, 60.0, 80.0, K),
        (ReleaseRule.BEAT_SERVED, 0.0, 85.0, 60.0, 80.0, R),
        (ReleaseRule.BEAT_SERVED, 10.0, 85.0, 60.0, 80.0, K),
        (ReleaseRule.BEAT_SERVED, 0.0, 61.0, 60.0, None, R),  # nothing served: the base stands in
        (ReleaseRule.BEAT_SERVED, 0.0, 59.0, 60.0, None, K),
    ],
)
def test_the_rule_decides(rule, margin, candidate, base, served, expected) -> None:
    decision, reason = decide(rule, margin, candidate, base, served)
    assert decision is expected and reason.startswith(expected.value)


def test_a_gating_rule_without_scores_is_an_error() -> None:
    with pytest.raises(ValueError, match="beat_base"):
        decide(ReleaseRule.BEAT_BASE, 0.0, None, 50.0, None)


def _request(**fields) -> TrainingRequest:
    return TrainingRequest(job_id="j", adapter_id="acme/a", dataset=DatasetRef(task="sentiment"), **fields)


@pytest.mark.parametrize(
    "fields, eval_sets, error",
    [
        ({}, None, None),  # today's requests: no evaluation, released always
        (dict(release=Release(ReleaseRule.BEAT_BASE)), land_eval_sets, "needs an evaluation"),
        (dict(evaluation=Evaluation(task="sentiment")), None, "evaluates nothing"),
        (dict(evaluation=Evaluation(task="sentiment", held_out=True)), land_eval_sets, "exactly one"),
        (dict(evaluation=Evaluation()), land_eval_sets, "exactly one"),
        (dict(evaluation=Evaluation(task="no-such-task")), land_eval_sets, "unknown evaluation task"),
        (dict(evaluation=Evaluation(task="sentiment"), release=Release(ReleaseRule.BEAT_SERVED)), land_eval_sets, None),
        (dict(evaluation=Evaluation(held_out=True, metric="accuracy")), land_eval_sets, None),
    ],
)
def test_release_requests_are_checked_before_the_job_runs(fields, eval_sets, error) -> None:
    if error is None:
        check_release(_request(**fields), eval_sets)
    else:
        with pytest.raises(ValueError, match=error):
            check_release(_request(**fields), eval_sets)


@pytest.mark.parametrize(
    "body",
    [
        {"rule": "beat_everyone"},
        {"margin_points": 101},
        {"margin_points": -100.5},
        {"rule": "always", "surprise": 1},
    ],
)
def test_release_fields_are_bounded_at_decode(body) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(json.dumps(body).encode(), type=Release)


@pytest.mark.parametrize("body", [{"max_examples": 0}, {"max_examples": 1001}, {"max_new_tokens": 257}, {"metric": "bleu"}])
def test_evaluation_fields_are_bounded_at_decode(body) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(json.dumps(body).encode(), type=Evaluation)


def test_held_out_rows_are_scored_with_the_named_metric() -> None:
    rows = ((" a ->", " yes"), (" b ->", " no"), (" c ->", " yes"))
    accuracy = land_eval_sets(EvalSource(rows=rows, metric="accuracy"))
    assert [accuracy.score(answer, gold) for answer, gold in zip([" yes", " yes", " maybe"], accuracy.golds)] == [1, 0, 0]
    builtin = land_eval_sets(EvalSource(task="sentiment"))
    assert builtin.metric == "accuracy" and len(builtin.prompts) == len(builtin.golds) > 0


def _adapter_files(path: Path, content: str) -> tuple[Path, str]:
    path.mkdir(parents=True, exist_ok=True)
    (path / ADAPTER_FILES[0]).write_text(json.dumps({"r": 4}))
    (path / ADAPTER_FILES[1]).write_bytes(content.encode())
    return path, adapter_checksum(path)


def _install(root: Path, tmp_path: Path, n: int, *, current: bool) -> int:
    source, checksum = _adapter_files(tmp_path / f"src{n}", f"weights {n}")
    return install_adapter(
        source, root, "acme/a", job_id=f"job{n}", checksum=checksum, overwrite=True, make_current=current
    ).version


def test_a_kept_version_is_installed_but_not_current_until_released(tmp_path) -> None:
    root = tmp_path / "adapters"
    assert _install(root, tmp_path, 1, current=False) == 1
    assert installed(root, "acme/a") is None and [a.version for a in installed_versions(root, "acme/a")] == [1]
    history = release_version(root, "acme/a", 1)
    assert (history.revision, history.released) == (1, (1,)) and installed(root, "acme/a").version == 1
    assert _install(root, tmp_path, 2, current=False) == 2
    assert installed(root, "acme/a").version == 1  # kept: v1 is still what the store serves
    with pytest.raises(AdapterStoreError, match="no installed version 9"):
        release_version(root, "acme/a", 9)


def test_rollback_is_a_new_revision_naming_the_previous_release(tmp_path) -> None:
    root = tmp_path / "adapters"
    _install(root, tmp_path, 1, current=False)
    release_version(root, "acme/a", 1)
    for n in (2, 3):
        _install(root, tmp_path, n, current=False)
    release_version(root, "acme/a", 3)
    history = roll_back(root, "acme/a")
    assert (history.revision, history.released, installed(root, "acme/a").version) == (3, (1,), 1)
    with pytest.raises(AdapterStoreError, match="no earlier release"):
        roll_back(root, "acme/a")
    assert release_history(root, "acme/a").revision == 3  # a refused rollback changes nothing


def test_a_history_starts_from_an_earlier_installation(tmp_path) -> None:
    root = tmp_path / "adapters"
    _install(root, tmp_path, 1, current=True)  # installed before the release gate existed
    _install(root, tmp_path, 2, current=False)
    assert release_version(root, "acme/a", 2).released == (1, 2)
    assert roll_back(root, "acme/a").current == 1


def test_pruning_spares_the_served_and_the_previous_release(tmp_path) -> None:
    root = tmp_path / "adapters"
    _install(root, tmp_path, 1, current=False)
    release_version(root, "acme/a", 1)
    _install(root, tmp_path, 2, current=False)
    release_version(root, "acme/a", 2)
    for n in (3, 4, 5):
        _install(root, tmp_path, n, current=False)  # kept ones
    assert [a.version for a in installed_versions(root, "acme/a")] == [1, 2, 4, 5]


class _Sink:
    def __init__(self) -> None:
        self.registered: list[tuple[int, str]] = []

    def register_adapter(self, ref) -> None:
        self.registered.append((ref.version, ref.uri))

    def retire_adapter(self, adapter_id: str) -> None:
        self.registered.append((0, "retired"))


@pytest.mark.parametrize(
    "announced, applied",
    [
        ([(0, 1), (0, 2)], [1, 2]),  # events without revisions: versions only go up
        ([(0, 2), (0, 1)], [2]),  # an older version is refused (a hostile pin back)
        ([(1, 1), (2, 2), (3, 1)], [1, 2, 1]),  # a rollback: a higher revision naming v1
        ([(3, 1), (2, 2)], [1]),  # a lower revision is refused, whatever its version
        ([(2, 2), (0, 9)], [2]),  # an event without a revision cannot undo a revision
        ([(1, 1), (1, 1)], [1, 1]),  # a redelivered announcement is applied again (idempotent)
    ],
)
def test_the_registry_orders_announcements_by_revision_then_version(announced, applied, caplog) -> None:
    sink = _Sink()
    follower = AdaptersTopicFollower(MemoryTransport(), "adapters", sink)
    for offset, (revision, version) in enumerate(announced):
        event = AdapterEvent(adapter_id="acme/a", version=version, uri=f"file:///v{version}", revision=revision)
        with caplog.at_level(logging.WARNING):
            follower.on_record(b"acme/a", encode(event), offset)
    assert [version for version, _ in sink.registered] == applied


class _Answers:
    """Scripted decoding: the base answers nonsense; each call's candidate answers as `quality` says."""

    def __init__(self, *qualities: str) -> None:
        self.qualities = list(qualities)
        self.calls: list[dict[str, str]] = []

    def __call__(self, config, prompts, adapters, max_new_tokens):
        self.calls.append(dict(adapters))
        quality = self.qualities.pop(0)
        right = [" yes" if "cat" in p else " no" for p in prompts]
        wrong = [" no" if "cat" in p else " yes" for p in prompts]
        answers = {BASE: [" maybe"] * len(prompts), CANDIDATE: right if quality == "good" else wrong}
        if "served" in adapters:
            answers["served"] = right
        return answers


async def test_the_worker_keeps_a_loser_and_announces_a_winner_then_promote_and_rollback(tmp_path) -> None:
    from consumers.training.config import TrainWorkerConfig
    from streamer import TopicNames

    data = tmp_path / "data"
    write_task(data / "task.jsonl", n=8)
    write_task(data / "test.jsonl", n=20, seed=3)
    config = TrainWorkerConfig(
        base_model_path=str(tmp_path / "tiny"), adapter_root=str(tmp_path / "adapters"),
        work_dir=str(tmp_path / "jobs"), dataset_roots=(str(data),), base_model_name="tiny",
    )  # fmt: skip
    bus = Bus(MemoryTransport(), TopicNames("gate"))
    answers = _Answers("bad", "good")
    evaluation = Evaluation(test_uri=str(data / "test.jsonl"), metric="accuracy")

    def request(job_id: str) -> TrainingRequest:
        return TrainingRequest(
            job_id=job_id, adapter_id="acme/gated", dataset=DatasetRef(uri=str(data / "task.jsonl")), overwrite=True,
            evaluation=evaluation, release=Release(ReleaseRule.BEAT_BASE, margin_points=5.0),
        )  # fmt: skip

    worker = TrainingWorker(
        bus.transport, bus.topics, config, launch=ScriptedJobs(), eval_sets=land_eval_sets, generate_answers=answers
    )
    async with running(worker):
        await bus.send(bus.topics.training_requests, encode(request("loser")), key="loser")
        loser = (await bus.job_events("loser", _terminal))[-1]
        await bus.send(bus.topics.training_requests, encode(request("winner")), key="winner")
        winner = (await bus.job_events("winner", _terminal))[-1]
        announced = await bus.read_until(bus.topics.adapters, lambda values: len(values) >= 1)
        await bus.wait_committed(config.group_id, 2)  # stopping the worker mid-commit hangs the memory bus
    assert loser.state is JobState.COMPLETED and loser.adapter_version == 1
    assert loser.release.decision is K and (loser.release.candidate, loser.release.base) == (0.0, 0.0)
    assert (loser.release.task, loser.release.metric, loser.release.num_examples) == ("test_file", "accuracy", 20)
    assert winner.release.decision is R and winner.release.candidate == 100.0 and winner.adapter_version == 2
    assert [decode_adapter_event(v).version for v in announced] == [2]  # the loser was never announced
    event = decode_adapter_event(announced[0])
    assert event.revision == 1 and event.release == winner.release and event.base_model == "tiny"
    assert release_summary(loser.release).startswith("kept: beat_base by 5 on test_file (accuracy, 20 rows)")

    root = config.adapter_root
    kept = installed_versions(root, "acme/gated")[0]
    assert read_record(kept).release == loser.release  # where promote finds it
    promoted = promote(root, "acme/gated", 1)
    assert (promoted.version, promoted.revision, promoted.checksum) == (1, 2, kept.checksum)
    assert promoted.release.decision is R and promoted.release.candidate == 0.0  # the scores it was kept with
    back = rollback(root, "acme/gated")
    assert (back.version, back.revision, back.release) == (2, 3, winner.release)


async def test_beat_served_scores_the_served_version_too(tmp_path) -> None:
    from consumers.training.config import TrainWorkerConfig
    from streamer import TopicNames

    data = tmp_path / "data"
    write_task(data / "task.jsonl", n=8)
    write_task(data / "test.jsonl", n=10, seed=4)
    config = TrainWorkerConfig(
        base_model_path=str(tmp_path / "tiny"), adapter_root=str(tmp_path / "adapters"),
        work_dir=str(tmp_path / "jobs"), dataset_roots=(str(data),),
    )  # fmt: skip
    bus = Bus(MemoryTransport(), TopicNames("served"))
    answers = _Answers("good", "good")
    evaluation = Evaluation(test_uri=str(data / "test.jsonl"), metric="accuracy")
    requests = [
        TrainingRequest(job_id="first", adapter_id="acme/s", dataset=DatasetRef(uri=str(data / "task.jsonl"))),
        TrainingRequest(
            job_id="second", adapter_id="acme/s", dataset=DatasetRef(uri=str(data / "task.jsonl")), overwrite=True,
            evaluation=evaluation, release=Release(ReleaseRule.BEAT_SERVED),
        ),
    ]  # fmt: skip
    worker = TrainingWorker(
        bus.transport, bus.topics, config, launch=ScriptedJobs(), eval_sets=land_eval_sets, generate_answers=answers
    )
    async with running(worker):
        for r in requests:
            await bus.send(bus.topics.training_requests, encode(r), key=r.job_id)
            last = (await bus.job_events(r.job_id, _terminal))[-1]
        await bus.wait_committed(config.group_id, 2)
    assert requests[0].release.rule is ReleaseRule.ALWAYS
    assert Path(answers.calls[0]["served"]) == Path(installed_versions(config.adapter_root, "acme/s")[0].path)
    assert last.release.decision is K and (last.release.served, last.release.served_version) == (100.0, 1)
    assert installed(config.adapter_root, "acme/s").version == 1



def _prepare_config(tmp_path: Path):
    from consumers.training.config import TrainWorkerConfig

    (tmp_path / "base").mkdir(exist_ok=True)
    return TrainWorkerConfig(
        base_model_path=str(tmp_path / "base"), adapter_root=str(tmp_path / "adapters"),
        work_dir=str(tmp_path / "work"), dataset_roots=(str(tmp_path / "data"),),
    )  # fmt: skip


@pytest.mark.parametrize(
    "evaluation, rows, code, reason",
    [
        (Evaluation(test_uri="/etc/hostname", metric="accuracy"), 64, "dataset_refused", "outside"),
        (Evaluation(held_out=True), 8, "invalid_request", "no rows"),  # 5% of 8 rows is none
    ],
)
def test_an_evaluation_without_readable_rows_is_refused_before_training(tmp_path, evaluation, rows, code, reason) -> None:
    from consumers.training.jobs import JobRefused, prepare_job

    config = _prepare_config(tmp_path)
    data = write_task(tmp_path / "data" / "task.jsonl", n=rows)
    request = TrainingRequest(job_id="j", adapter_id="acme/a", dataset=DatasetRef(uri=str(data)), evaluation=evaluation)
    with pytest.raises(JobRefused, match=reason) as refused:
        prepare_job(config, request, eval_sets=land_eval_sets)
    assert refused.value.code.value == code


def test_held_out_rows_are_the_trainers_own_split(tmp_path) -> None:
    from consumers.training.jobs import prepare_job
    from consumers.training.release_gate import eval_rows
    from gpu_engine.training.dataset import load_rows, split_rows

    config = _prepare_config(tmp_path)
    data = write_task(tmp_path / "data" / "task.jsonl", n=100)
    evaluation = Evaluation(held_out=True, metric="accuracy")
    request = TrainingRequest(job_id="j", adapter_id="acme/a", dataset=DatasetRef(uri=str(data)), evaluation=evaluation)
    job = prepare_job(config, request, eval_sets=land_eval_sets)
    rows = eval_rows(evaluation, job.spec, job.job_dir)
    spec = job.spec
    _, held_out = split_rows(load_rows(spec.dataset_path), spec.eval_fraction, spec.max_eval_rows, spec.seed)
    assert rows == tuple((r.prompt, r.completion) for r in held_out) and len(rows) == 5


async def test_lorastream_train_shows_the_evaluation_and_the_decision() -> None:
    import io

    from rich.console import Console

    from cli.train_commands import follow_job
    from schemas.training import ReleaseScores
    from tests.training.test_training_cli import _ScriptedEvents

    scores = ReleaseScores(
        decision=K, rule=ReleaseRule.BEAT_BASE, margin_points=5.0, task="sentiment", metric="accuracy",
        num_examples=100, candidate=58.0, base=55.0, reason="kept: 58.0 does not beat the base's 55.0 by more than 5",
    )  # fmt: skip
    completed = TrainingEvent(
        job_id="j", state=JobState.COMPLETED, ts_ms=1, adapter_id="acme/sql", adapter_uri="file:///a",
        adapter_version=3, release=scores,
    )  # fmt: skip
    out = io.StringIO()
    code = await follow_job(_ScriptedEvents([completed]), out=Console(file=out, width=200), label="acme/sql")
    lines = out.getvalue().splitlines()
    assert code == 0 and lines[0] == "completed acme/sql version 3 → file:///a"
    assert lines[2] == "kept: beat_base by 5 on sentiment (accuracy, 100 rows): candidate 58.0, base 55.0"
    assert lines[3] == "not served; `lorastream promote acme/sql 3` serves it"

