"""Training names its base (issue 11 §3): a worker prepares jobs for its own base only (no Kafka)."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.training.config import TrainWorkerConfig
from consumers.training.jobs import JobRefused, prepare_job
from land import builtin_train_file
from schemas import DatasetRef, TrainingRequest


def _config(tmp_path: Path) -> TrainWorkerConfig:
    base = tmp_path / "models" / "tiny-llama"
    base.mkdir(parents=True, exist_ok=True)
    return TrainWorkerConfig(
        base_model_path=str(base), adapter_root=str(tmp_path / "adapters"), work_dir=str(tmp_path / "work"),
        base_model_name="alpha",
    )


def _request(job_id: str, base_model: str | None) -> TrainingRequest:
    return TrainingRequest(job_id=job_id, adapter_id=f"a/{job_id}", dataset=DatasetRef(task="sentiment"), base_model=base_model)


@pytest.mark.parametrize("base_model", [None, "alpha", "PATH"])
def test_a_request_for_the_workers_own_base_is_prepared(tmp_path: Path, base_model) -> None:
    config = _config(tmp_path)
    named = config.base_model_path if base_model == "PATH" else base_model
    job = prepare_job(config, _request("own", named), builtin_train_file)
    assert Path(job.spec.dataset_path).is_file()


@pytest.mark.parametrize("base_model", ["beta", "tiny-qwen2", "alpha-2"])
def test_a_request_for_another_base_is_refused_and_leaves_no_job(tmp_path: Path, base_model) -> None:
    config = _config(tmp_path)
    with pytest.raises(JobRefused, match="unknown base model") as refused:
        prepare_job(config, _request("foreign", base_model), builtin_train_file)
    assert "'alpha'" in str(refused.value)
    assert not (Path(config.work_dir) / "foreign").exists()
