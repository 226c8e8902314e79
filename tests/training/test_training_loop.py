"""The training loop on a tiny Llama: loss oracle, determinism, resume, cancel, output, errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from gpu_engine.training import (
    BaseNotFoundError,
    InvalidSpecError,
    JobCancelled,
    JobEventKind,
    JobPreempted,
    StopSignal,
    TrainJobSpec,
    adapter_checksum,
)
from gpu_engine.training.trainer import run_training


def make_spec(base: Path, data: Path, out: Path, **overrides) -> TrainJobSpec:
    fields = dict(
        effective_batch_size=8,
        micro_batch_size=4,
        max_steps=6,
        max_seq_len=64,
        learning_rate=1e-2,
        eval_fraction=0.1,
        progress_interval_s=0.0,
        device="cpu",
    )
    fields.update(overrides)
    return TrainJobSpec(str(base), str(out), str(data), **fields)


def test_loss_sum_matches_transformers_on_completion_tokens(tiny_base) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gpu_engine.training.dataset import Row
    from gpu_engine.training.examples import tokenize_rows
    from gpu_engine.training.loss import collate, loss_sum

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_base))
    rows = [Row("the cat", " sees a dog", 1), Row("a long river runs under the old road", " no", 2), Row("x", " y", 3)]
    examples, _ = tokenize_rows(tokenizer, rows, max_seq_len=64)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_base), dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)).eval()
    with torch.no_grad():
        ours = loss_sum(model, collate(examples, tokenizer.pad_token_id, torch.device("cpu")))
        expected = sum(
            model(input_ids=torch.tensor([ex.input_ids]), labels=torch.tensor([ex.labels()])).loss * ex.num_loss_tokens
            for ex in examples
        )
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-4)


def test_same_seed_same_adapter_and_another_seed_differs(tiny_base, task_file, tmp_path) -> None:
    first = run_training(make_spec(tiny_base, task_file, tmp_path / "a", max_steps=3))
    again = run_training(make_spec(tiny_base, task_file, tmp_path / "b", max_steps=3))
    other = run_training(make_spec(tiny_base, task_file, tmp_path / "c", max_steps=3, seed=1))
    assert first.checksum == again.checksum
    assert other.checksum != first.checksum


def test_resume_after_preempt_equals_an_uninterrupted_run(tiny_base, task_file, tmp_path) -> None:
    straight = run_training(make_spec(tiny_base, task_file, tmp_path / "straight"))
    spec = make_spec(
        tiny_base, task_file, tmp_path / "resumed", checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_every_steps=2
    )
    stop, seen = StopSignal(), []

    def preempt_after_step_3(event) -> None:
        seen.append(event)
        if event.kind is JobEventKind.PROGRESS and event.step == 3:
            stop.preempt()

    with pytest.raises(JobPreempted) as caught:
        run_training(spec, preempt_after_step_3, stop)
    assert caught.value.step == 3
    assert [e.step for e in seen if e.kind is JobEventKind.CHECKPOINTED] == [2, 3]
    resumed_events = []
    resumed = run_training(spec, resumed_events.append)
    assert resumed_events[0].kind is JobEventKind.STARTED and resumed_events[0].resumed_from_step == 3
    assert resumed.resumed_from_step == 3
    assert resumed.checksum == straight.checksum
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step-00000003", "step-00000004"]  # newest two


def test_cancel_stops_between_micro_batches(tiny_base, task_file, tmp_path) -> None:
    stop = StopSignal()
    with pytest.raises(JobCancelled):
        run_training(
            make_spec(tiny_base, task_file, tmp_path / "out"),
            lambda event: stop.cancel() if event.kind is JobEventKind.STARTED else None,
            stop,
        )
    assert not (tmp_path / "out").exists()


def test_progress_is_rate_bounded_and_reports_what_it_used(tiny_base, task_file, tmp_path) -> None:
    events = []
    run_training(make_spec(tiny_base, task_file, tmp_path / "out", progress_interval_s=3600.0), events.append)
    assert [e.kind for e in events] == [JobEventKind.STARTED, JobEventKind.PROGRESS]
    started, last = events
    assert (started.quantization, started.device, started.total_steps) == ("none", "cpu", 6)
    assert last.step == 6 and last.eta_s == 0.0 and last.tokens_per_s > 0 and last.loss > 0
    assert 0 < last.learning_rate < 1e-2


def test_output_is_a_peft_adapter_that_changes_greedy_output(tiny_base, task_file, tmp_path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = make_spec(tiny_base, task_file, tmp_path / "out", max_steps=12, learning_rate=3e-2, dropout=0.0)
    events = []
    result = run_training(spec, events.append)
    out = Path(result.adapter_dir)
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in out.iterdir()}
    assert result.checksum == adapter_checksum(out)
    first_loss = next(e.loss for e in events if e.kind is JobEventKind.PROGRESS)
    assert result.final_loss < first_loss and result.eval_loss is not None

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_base))
    ids = tokenizer("the dog sees a tree ->", return_tensors="pt").input_ids
    base = AutoModelForCausalLM.from_pretrained(str(tiny_base), dtype=torch.float32).eval()
    with torch.no_grad():
        base_tokens = base.generate(ids, max_new_tokens=4, do_sample=False)
        tuned = PeftModel.from_pretrained(base, str(out)).eval()
        tuned_tokens = tuned.generate(input_ids=ids, max_new_tokens=4, do_sample=False)
    assert not torch.equal(base_tokens, tuned_tokens)

    rerun = []
    assert run_training(spec, rerun.append) == result  # finished: the saved result, no training
    assert rerun == []


def test_nf4_base_through_bitsandbytes(tiny_base, task_file, tmp_path) -> None:
    pytest.importorskip("bitsandbytes")
    events = []
    result = run_training(make_spec(tiny_base, task_file, tmp_path / "out", max_steps=1, quantize="nf4"), events.append)
    assert events[0].quantization == result.quantization == "nf4"


def test_base_problems_are_typed(tiny_base, task_file, tmp_path) -> None:
    with pytest.raises(BaseNotFoundError):
        run_training(make_spec(tmp_path / "nowhere", task_file, tmp_path / "out"))
    with pytest.raises(InvalidSpecError, match="max_seq_len 4096"):
        run_training(dataclasses.replace(make_spec(tiny_base, task_file, tmp_path / "out"), max_seq_len=4096))
