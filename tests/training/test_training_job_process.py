"""The job process boundary: JSON-line events out, cancel/preempt in, typed failures."""

from __future__ import annotations

import io
import json
import subprocess
import sys

from gpu_engine.training import JobEventKind, StopSignal, TrainJobSpec, parse_job_event
from gpu_engine.training.job_process import JobProcess
from gpu_engine.training.run_job import run


def spec_for(tiny_base, data, tmp_path, **overrides) -> TrainJobSpec:
    fields = dict(
        effective_batch_size=4,
        micro_batch_size=2,
        max_steps=40,
        max_seq_len=64,
        learning_rate=1e-2,
        eval_fraction=0.0,
        progress_interval_s=0.0,
        device="cpu",
        checkpoint_dir=str(tmp_path / "ckpt"),
        checkpoint_every_steps=1000,
    )
    fields.update(overrides)
    return TrainJobSpec(str(tiny_base), str(tmp_path / "adapter"), str(data), **fields)


def events_of(out: io.StringIO) -> list:
    return [parse_job_event(line) for line in out.getvalue().splitlines()]


def test_importing_the_light_modules_leaves_torch_out() -> None:
    code = (
        "import sys, gpu_engine.training, gpu_engine.training.job_process, gpu_engine.training.run_job; "
        "sys.exit('torch' in sys.modules or 'transformers' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_failures_are_single_typed_events(tiny_base, task_file, tmp_path) -> None:
    out = io.StringIO()
    assert run(str(tmp_path / "absent.json"), out, StopSignal()) == 1
    (event,) = events_of(out)
    assert (event.kind, event.code) == (JobEventKind.FAILED, "invalid_spec")

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\n')
    spec_for(tiny_base, bad, tmp_path).save(tmp_path / "spec.json")
    out = io.StringIO()
    assert run(str(tmp_path / "spec.json"), out, StopSignal()) == 1
    (event,) = events_of(out)
    assert (event.kind, event.code) == (JobEventKind.FAILED, "dataset_invalid")
    assert "line 2: missing field 'completion'" in event.reason


def test_event_lines_round_trip_and_drop_non_finite_numbers() -> None:
    from gpu_engine.training import JobEvent

    event = JobEvent(JobEventKind.PROGRESS, step=3, loss=float("nan"), metrics={"x": 1.5})
    line = event.to_line()
    assert json.loads(line) == {"kind": "progress", "step": 3, "metrics": {"x": 1.5}}
    assert parse_job_event(line) == JobEvent(JobEventKind.PROGRESS, step=3, metrics={"x": 1.5})


async def test_the_job_process_speaks_json_lines(tmp_path) -> None:
    """A real child process (failing fast, before torch loads): one event line, exit status 1.

    Preempt/resume across job processes is covered through the worker in test_training_e2e.py.
    """
    job = JobProcess(tmp_path / "absent.json", log_path=tmp_path / "job.log", num_threads=1)
    await job.start()
    events = [event async for event in job.events()]
    assert [(e.kind, e.code) for e in events] == [(JobEventKind.FAILED, "invalid_spec")]
    assert job.returncode == 1
