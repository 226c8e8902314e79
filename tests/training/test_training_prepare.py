"""prepare_job: turning a TrainingRequest into a job spec (no Kafka, no training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consumers.training_jobs import JobRefused, TrainWorkerConfig, prepare_job
from schemas import DatasetRef, TrainingRequest


def _config(tmp_path: Path) -> TrainWorkerConfig:
    base = tmp_path / "base"
    base.mkdir()
    return TrainWorkerConfig(
        base_model_path=str(base), adapter_root=str(tmp_path / "adapters"), work_dir=str(tmp_path / "work")
    )


def test_a_builtin_task_name_becomes_its_training_file(tmp_path: Path) -> None:
    config = _config(tmp_path)
    request = TrainingRequest(job_id="j1", adapter_id="land/sentiment", dataset=DatasetRef(task="sentiment"))
    job = prepare_job(config, request)
    data = Path(job.spec.dataset_path)
    assert data.is_relative_to(Path(config.work_dir))
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    assert len(rows) > 50 and rows[0]["prompt"].endswith("### Label:")


@pytest.mark.parametrize(
    "dataset, reason",
    [
        (DatasetRef(task="no-such-task"), "unknown built-in task"),
        (DatasetRef(task="../../etc/passwd"), "unknown built-in task"),
        (DatasetRef(), "needs a uri or a built-in task"),
        (DatasetRef(uri="s3://bucket/data.jsonl"), "only local paths"),
    ],
)
def test_datasets_that_cannot_be_trained_on_are_refused(tmp_path: Path, dataset: DatasetRef, reason: str) -> None:
    request = TrainingRequest(job_id="j2", adapter_id="a", dataset=dataset)
    with pytest.raises(JobRefused, match=reason):
        prepare_job(_config(tmp_path), request)
