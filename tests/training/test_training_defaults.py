"""Settings a request leaves unset are chosen from the base's size (issue 17): the rule, the clamp
of max_seq_len, the notice on the `started` event, and the worker's own log lines about the job."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from consumers.training.config import TrainWorkerConfig
from consumers.training.job_log import JobLog
from consumers.training.jobs import PreparedJob, prepare_job
from consumers.training.worker import TrainingWorker
from gpu_engine.training.defaults import (
    ALL_LINEAR,
    BaseShape,
    choose_settings,
    estimate_params,
    read_base_shape,
    tier_for,
)
from gpu_engine.training.events import JobEvent, JobEventKind
from gpu_engine.training.spec import TrainJobSpec
from schemas import DatasetRef, Hyperparameters, JobState, TrainingRequest, decode_adapter_event, encode
from streamer import TopicNames
from streamer.transport.memory import MemoryTransport
from tests.training.task_data import write_task
from tests.training.test_training_worker_scenarios import Bus, ScriptedJobs, _terminal, running

# the land's base: 4 layers, hidden 128, 1024-token vocabulary, untied head, 256 positions
LAND_CONFIG = {
    "model_type": "llama", "hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
    "num_key_value_heads": 2, "intermediate_size": 384, "vocab_size": 1024, "max_position_embeddings": 256,
    "tie_word_embeddings": False,
}  # fmt: skip
# Llama-2-7B's config
LLAMA_7B_CONFIG = {
    "model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 32, "intermediate_size": 11008, "vocab_size": 32000, "max_position_embeddings": 4096,
}  # fmt: skip


def test_parameter_estimates_match_the_known_sizes() -> None:
    land = estimate_params(LAND_CONFIG)
    llama = estimate_params(LLAMA_7B_CONFIG)
    assert 1.0e6 <= land <= 1.1e6  # docs/land.md: a 1.0M-parameter Llama
    assert abs(llama - 6.74e9) / 6.74e9 < 0.01  # Llama-2-7B: 6.74B
    assert estimate_params({"hidden_size": 8}) is None


@pytest.mark.parametrize(
    "num_params, tier, r, learning_rate, targets",
    [
        (7_000_000_000, "lora_land", 8, 2e-4, ("q_proj", "v_proj")),
        (1_000_000_000, "lora_land", 8, 2e-4, ("q_proj", "v_proj")),
        (999_999_999, "small", 16, 5e-4, ALL_LINEAR),
        (100_000_000, "small", 16, 5e-4, ALL_LINEAR),
        (1_049_728, "tiny", 16, 5e-3, ALL_LINEAR),
        (None, "lora_land", 8, 2e-4, ("q_proj", "v_proj")),
    ],
)
def test_the_tier_follows_the_parameter_count(num_params, tier, r, learning_rate, targets) -> None:
    chosen = tier_for(num_params)
    assert (chosen.name, chosen.r, chosen.learning_rate, chosen.target_modules) == (tier, r, learning_rate, targets)
    values = choose_settings(BaseShape(num_params, None), {}).values
    assert (values["r"], values["alpha"], values["learning_rate"]) == (r, 2.0 * r, learning_rate)


@pytest.mark.parametrize(
    "given, expected",
    [
        ({}, {"r": 16, "alpha": 32.0, "learning_rate": 5e-3, "epochs": 1.0, "min_steps": 150, "max_seq_len": 256}),
        ({"r": 4}, {"r": 4, "alpha": 8.0, "target_modules": ALL_LINEAR}),
        ({"alpha": 5.0, "learning_rate": 1e-3}, {"r": 16, "alpha": 5.0, "learning_rate": 1e-3}),
        ({"target_modules": ["q_proj"]}, {"target_modules": ["q_proj"]}),
        ({"epochs": 2.0}, {"epochs": 2.0, "min_steps": 1}),  # an epoch count asked for is exact
        ({"max_steps": 7}, {"epochs": None, "min_steps": 1}),
        ({"max_seq_len": 64}, {"max_seq_len": 64}),
        ({"max_seq_len": 4096}, {"max_seq_len": 256}),
    ],
)
def test_a_request_value_wins_and_the_rest_is_chosen(given, expected) -> None:
    values = choose_settings(BaseShape(1_049_728, 256), given).values
    assert {name: values[name] for name in expected} == expected


@pytest.mark.parametrize(
    "given, notice",
    [
        ({}, "chosen for a 1.0M-parameter base: r 16, alpha 32, lr 0.005, all-linear, 1 epoch, at least 150 steps; "
             "max_seq_len 512 clamped to the base's 256 positions"),
        ({"r": 8, "alpha": 16.0, "target_modules": ["q_proj"], "learning_rate": 1e-3, "max_steps": 3,
          "max_seq_len": 300}, "max_seq_len 300 clamped to the base's 256 positions"),
        ({"r": 8, "alpha": 16.0, "target_modules": ["q_proj"], "learning_rate": 1e-3, "max_steps": 3,
          "max_seq_len": 128}, None),
    ],
)  # fmt: skip
def test_the_notice_says_what_was_chosen_or_clamped(given, notice) -> None:
    assert choose_settings(BaseShape(1_049_728, 256), given).notice == notice


def test_min_steps_is_a_floor_under_epochs_only() -> None:
    spec = TrainJobSpec(base_model_path="b", output_dir="o", dataset_path="d", epochs=1.0, min_steps=150)
    assert spec.total_steps(300) == 150  # 19 steps of 16 rows would be too few for a tiny base
    assert spec.total_steps(16 * 200) == 200
    assert TrainJobSpec(base_model_path="b", output_dir="o", dataset_path="d", max_steps=5, min_steps=150).total_steps(300) == 5
    with pytest.raises(ValueError, match="min_steps"):
        TrainJobSpec(base_model_path="b", output_dir="o", dataset_path="d", min_steps=0)


def _worker_config(tmp_path: Path) -> TrainWorkerConfig:
    base = tmp_path / "land-base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps(LAND_CONFIG))
    write_task(tmp_path / "data" / "task.jsonl", n=8)
    return TrainWorkerConfig(
        base_model_path=str(base), adapter_root=str(tmp_path / "adapters"), work_dir=str(tmp_path / "jobs"),
        dataset_roots=(str(tmp_path / "data"),), log_every_s=0.0,
    )  # fmt: skip


def test_a_request_with_defaults_is_prepared_with_the_settings_for_its_base(tmp_path) -> None:
    config = _worker_config(tmp_path)
    assert read_base_shape(config.base_model_path) == BaseShape(1_049_728, 256, "llama")
    request = TrainingRequest(job_id="j", adapter_id="acme/j", dataset=DatasetRef(uri=str(tmp_path / "data" / "task.jsonl")))
    prepared = prepare_job(config, request)
    saved = TrainJobSpec.load(prepared.job_dir / "spec.json")
    assert (saved.r, saved.target_modules, saved.learning_rate, saved.max_seq_len) == (16, ALL_LINEAR, 5e-3, 256)
    assert saved == prepared.spec and prepared.num_rows == 8
    assert prepared.notice.startswith("chosen for a 1.0M-parameter base")
    explicit = Hyperparameters(r=4, alpha=8.0, target_modules=["q_proj"], learning_rate=1e-3, max_steps=2)
    refit = prepare_job(config, TrainingRequest(job_id="k", adapter_id="acme/k", dataset=request.dataset, hyperparameters=explicit))
    assert (refit.spec.r, refit.spec.target_modules, refit.spec.max_steps, refit.spec.max_seq_len) == (4, ("q_proj",), 2, 256)


async def test_the_started_event_carries_the_notice_and_the_worker_logs_the_job(tmp_path, caplog) -> None:
    config = _worker_config(tmp_path)
    bus = Bus(MemoryTransport(), TopicNames("notice-test"))
    request = TrainingRequest(job_id="job-d", adapter_id="acme/d", dataset=DatasetRef(uri=str(tmp_path / "data" / "task.jsonl")))
    caplog.set_level(logging.INFO, logger="consumers.training.job_log")
    async with running(TrainingWorker(bus.transport, bus.topics, config, launch=ScriptedJobs())):
        await bus.send(bus.topics.training_requests, encode(request), key="job-d")
        events = await bus.job_events("job-d", _terminal)
        announced = await bus.read_until(bus.topics.adapters, lambda values: len(values) >= 1)
        await bus.wait_committed(config.group_id, 1)
    started = next(e for e in events if e.state is JobState.STARTED)
    assert started.notice.startswith("chosen for a 1.0M-parameter base: r 16, alpha 32, lr 0.005, all-linear")
    assert "max_seq_len 512 clamped to the base's 256 positions" in started.notice
    assert events[-1].state is JobState.COMPLETED and all(e.notice is None for e in events if e is not started)
    assert decode_adapter_event(announced[0]).rank == 16  # the chosen rank, not the request's None
    lines = [(r.getMessage(), getattr(r, "request_id", None)) for r in caplog.records if r.name == "consumers.training.job_log"]
    assert all(request_id == "job-d" for _, request_id in lines)
    messages = [message for message, _ in lines]
    assert messages[0].startswith("job job-d started: adapter acme/d on base land-base, 8 dataset rows, 4 steps")
    assert "r 16, alpha 32, lr 0.005" in messages[0] and "clamped" in messages[0]
    assert messages[1] == "job job-d step 1/4: loss 2.5000, eta 3s"
    assert messages[-1].startswith("job job-d completed after ") and messages[-1].endswith("at step 4/4 final loss 1.2500")


def test_progress_lines_are_rate_limited_and_the_end_names_the_outcome(caplog) -> None:
    now = [0.0]
    spec = TrainJobSpec(base_model_path="b", output_dir="o", dataset_path="d")
    request = TrainingRequest(job_id="j", adapter_id="acme/j", dataset=DatasetRef(task="sentiment"))
    job_log = JobLog(request, PreparedJob(Path("j"), spec, 0, 30), "base", every_s=10.0, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="consumers.training.job_log")
    job_log.started(JobEvent(JobEventKind.STARTED, total_steps=100, device="cpu", quantization="none"))
    for step in range(1, 31):
        now[0] = step * 1.0
        job_log.progress(JobEvent(JobEventKind.PROGRESS, step=step, total_steps=100, loss=3.0 - step / 100))
    now[0] = 31.5
    job_log.ended("failed", JobEvent(JobEventKind.FAILED, code="diverged"), "diverged: loss is nan")
    messages = [r.getMessage() for r in caplog.records]
    assert [m.split(":")[0] for m in messages[1:-1]] == ["job j step 10/100", "job j step 20/100", "job j step 30/100"]
    assert messages[-1] == "job j failed after 31.5s final loss 2.7000 (diverged: loss is nan)"
    assert caplog.records[-1].levelno == logging.WARNING
