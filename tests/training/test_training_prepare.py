"""prepare_job: turning a TrainingRequest into a job directory (no Kafka, no training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consumers.training.config import TrainWorkerConfig
from consumers.training.jobs import DATASET_FILE, JobRefused, begin_run, end_run, prepare_job
from land import builtin_train_file
from schemas import DatasetRef, ErrorCode, TrainingRequest

ROW = '{"prompt": "a", "completion": "b"}\n'


def _config(tmp_path: Path, **overrides) -> TrainWorkerConfig:
    base = tmp_path / "base"
    base.mkdir(exist_ok=True)
    (tmp_path / "data").mkdir(exist_ok=True)
    fields = dict(base_model_path=str(base), adapter_root=str(tmp_path / "adapters"), work_dir=str(tmp_path / "work"))
    return TrainWorkerConfig(**{**fields, **overrides})


def test_a_builtin_task_name_becomes_its_training_file(tmp_path: Path) -> None:
    config = _config(tmp_path)
    request = TrainingRequest(job_id="j1", adapter_id="land/sentiment", dataset=DatasetRef(task="sentiment"))
    job = prepare_job(config, request, builtin_train_file)
    data = Path(job.spec.dataset_path)
    assert data == Path(config.work_dir) / "j1" / DATASET_FILE
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    assert len(rows) > 50 and rows[0]["prompt"].endswith("### Label:")


def test_a_worker_without_builtin_tasks_refuses_a_task_name(tmp_path: Path) -> None:
    request = TrainingRequest(job_id="j0", adapter_id="a", dataset=DatasetRef(task="sentiment"))
    with pytest.raises(JobRefused, match="serves no built-in tasks") as refused:
        prepare_job(_config(tmp_path), request)
    assert refused.value.code is ErrorCode.INVALID_REQUEST


def test_the_job_trains_on_its_own_copy_of_a_dataset_under_a_root(tmp_path: Path) -> None:
    config = _config(tmp_path, dataset_roots=(str(tmp_path / "data"),), max_dataset_rows=2)
    source = tmp_path / "data" / "d.jsonl"
    source.write_text(ROW * 2)
    job = prepare_job(config, TrainingRequest(job_id="j3", adapter_id="a", dataset=DatasetRef(uri=str(source))))
    source.write_text("swapped after the check\n")
    assert Path(job.spec.dataset_path).read_text() == ROW * 2
    assert (job.spec.max_dataset_rows, job.spec.max_dataset_bytes) == (2, config.max_dataset_bytes)


@pytest.mark.parametrize(
    "dataset, code, reason",
    [
        (DatasetRef(task="no-such-task"), ErrorCode.INVALID_REQUEST, "unknown built-in task"),
        (DatasetRef(task="../../etc/passwd"), ErrorCode.INVALID_REQUEST, "unknown built-in task"),
        (DatasetRef(), ErrorCode.INVALID_REQUEST, "needs a uri or a built-in task"),
        (DatasetRef(uri="s3://bucket/data.jsonl"), ErrorCode.DATASET_REFUSED, "outside the worker's dataset bucket"),
        (DatasetRef(uri="/etc/hostname"), ErrorCode.DATASET_REFUSED, "outside the worker's dataset roots"),
        (DatasetRef(uri="/proc/self/mem"), ErrorCode.DATASET_REFUSED, "outside the worker's dataset roots"),
        (DatasetRef(uri="{data}/absent.jsonl"), ErrorCode.INVALID_REQUEST, "dataset_not_found"),
        (DatasetRef(uri="{data}/long.jsonl"), ErrorCode.DATASET_REFUSED, "dataset_too_large: .* more than 2 rows"),
    ],
)
def test_datasets_that_cannot_be_trained_on_are_refused(
    tmp_path: Path, dataset: DatasetRef, code: ErrorCode, reason: str
) -> None:
    config = _config(tmp_path, dataset_roots=(str(tmp_path / "data"),), max_dataset_rows=2)
    (tmp_path / "data" / "long.jsonl").write_text(ROW * 3)
    if dataset.uri is not None:
        dataset = DatasetRef(uri=dataset.uri.format(data=tmp_path / "data"))
    with pytest.raises(JobRefused, match=reason) as refused:
        prepare_job(config, TrainingRequest(job_id="j2", adapter_id="a", dataset=dataset), builtin_train_file)
    assert refused.value.code is code
    assert not (Path(config.work_dir) / "j2").exists()  # a refused request leaves nothing behind


def test_without_dataset_roots_no_local_file_is_read(tmp_path: Path) -> None:
    config = _config(tmp_path)
    (tmp_path / "data" / "d.jsonl").write_text(ROW)
    request = TrainingRequest(job_id="j4", adapter_id="a", dataset=DatasetRef(uri=str(tmp_path / "data" / "d.jsonl")))
    with pytest.raises(JobRefused, match="no dataset root configured") as refused:
        prepare_job(config, request, builtin_train_file)
    assert refused.value.code is ErrorCode.DATASET_REFUSED


@pytest.mark.parametrize(
    "steps, expected",
    [
        # each step: "begin" (returns earlier runs, or "refused") or "end"
        (["begin", "end", "begin", "end", "begin"], [0, None, 1, None, 2]),
        (["begin", "begin", "begin"], [0, 1, 2]),  # two runs died; the third may still run
        (["begin", "begin", "begin", "begin"], [0, 1, 2, "refused"]),
        (["begin", "begin", "begin", "begin", "begin"], [0, 1, 2, "refused", 3]),  # a fresh count after giving up
        (["begin", "begin", "end", "begin", "begin", "begin"], [0, 1, None, 2, 3, 4]),
    ],
)
def test_runs_that_die_without_an_outcome_are_bounded(tmp_path: Path, steps: list[str], expected: list) -> None:
    results = []
    for step in steps:
        if step == "end":
            end_run(tmp_path)
            results.append(None)
            continue
        try:
            results.append(begin_run(tmp_path, max_unfinished_runs=3))
        except JobRefused as exc:
            assert exc.code is ErrorCode.INTERNAL and "3 runs in a row" in exc.reason
            results.append("refused")
    assert results == expected


@pytest.mark.parametrize(
    "overrides",
    [
        dict(dataset_roots=("relative",)),
        dict(dataset_roots=("s3://x",)),
        dict(max_dataset_bytes=0),
        dict(max_dataset_rows=0),
        dict(max_unfinished_runs=0),
    ],
)
def test_worker_config_is_validated(tmp_path: Path, overrides: dict) -> None:
    with pytest.raises(ValueError):
        _config(tmp_path, **overrides)


def test_a_request_that_kills_the_worker_each_time_is_given_up(tmp_path: Path) -> None:
    """Every prepare_job below stands for a run whose worker died before the job had an outcome."""
    config = _config(tmp_path, max_unfinished_runs=2)
    request = TrainingRequest(job_id="j5", adapter_id="a", dataset=DatasetRef(task="sentiment"), attempt=1)
    assert [prepare_job(config, request, builtin_train_file).attempt for _ in range(2)] == [1, 2]
    with pytest.raises(JobRefused, match="gave up after 2 runs") as refused:
        prepare_job(config, request, builtin_train_file)
    assert refused.value.code is ErrorCode.INTERNAL
    assert prepare_job(config, request, builtin_train_file).attempt == 3  # a later request with the same id starts afresh
