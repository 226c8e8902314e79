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


async def test_preempted_job_resumes_in_a_new_process(tiny_base, task_file, tmp_path) -> None:
    spec_path = tmp_path / "spec.json"
    spec_for(tiny_base, task_file, tmp_path).save(spec_path)
    first = JobProcess(spec_path, log_path=tmp_path / "job.log", num_threads=1)
    await first.start()
    kinds = []
    async for event in first.events():
        kinds.append(event.kind)
        if event.kind is JobEventKind.PROGRESS and event.step == 2:
            first.preempt()
    assert kinds[0] is JobEventKind.STARTED and kinds[-1] is JobEventKind.PREEMPTED
    assert JobEventKind.CHECKPOINTED in kinds
    assert first.returncode == 0
    stopped_at = event.step

    second = JobProcess(spec_path, log_path=tmp_path / "job.log", num_threads=1)
    await second.start()
    events = [event async for event in second.events()]
    assert events[0].kind is JobEventKind.STARTED and events[0].resumed_from_step == stopped_at >= 2
    done = events[-1]
    assert done.kind is JobEventKind.COMPLETED and done.step == 40
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file() and len(done.checksum) == 64
