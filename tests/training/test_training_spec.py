"""TrainJobSpec validation and serialization."""

from __future__ import annotations

import dataclasses

import pytest

from gpu_engine.training import TrainJobSpec

BASE = dict(base_model_path="/m", output_dir="/o", dataset_path="/d.jsonl")


def test_defaults_are_lora_land() -> None:
    spec = TrainJobSpec(**BASE)
    assert (spec.r, spec.alpha, spec.dropout, spec.target_modules) == (8, 16.0, 0.05, ("q_proj", "v_proj"))
    assert (spec.learning_rate, spec.lr_scheduler, spec.warmup_ratio) == (2e-4, "cosine", 0.03)
    assert (spec.effective_batch_size, spec.grad_accum_steps) == (16, 4)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(effective_batch_size=10, micro_batch_size=4), "multiple of micro_batch_size"),
        (dict(max_steps=None, epochs=None), "give max_steps or epochs"),
        (dict(r=0), "r must be"),
        (dict(alpha=float("nan")), "alpha"),
        (dict(dropout=1.0), "dropout"),
        (dict(target_modules=()), "at least one"),
        (dict(target_modules=("q_proj", "lm_head")), "lm_head"),
        (dict(target_modules=("q_proj", "q_proj")), "distinct"),
        (dict(learning_rate=0.0), "learning_rate"),
        (dict(lr_scheduler="step"), "lr_scheduler"),
        (dict(warmup_ratio=0.9), "warmup_ratio"),
        (dict(max_steps=0), "max_steps"),
        (dict(epochs=-1.0), "epochs"),
        (dict(max_seq_len=4), "max_seq_len"),
        (dict(quantize="int8"), "quantize"),
        (dict(device="tpu"), "device"),
        (dict(eval_fraction=1.0), "eval_fraction"),
        (dict(checkpoint_every_steps=0), "checkpoint_every_steps"),
        (dict(prompt_field="text", completion_field="text"), "must differ"),
        (dict(dataset_path=""), "dataset_path"),
        (dict(max_dataset_bytes=0), "max_dataset_bytes"),
        (dict(max_dataset_rows=0), "max_dataset_rows"),
    ],
)
def test_invalid_specs_raise_value_error(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainJobSpec(**{**BASE, **change})


def test_round_trip_through_json(tmp_path) -> None:
    spec = TrainJobSpec(**BASE, target_modules=["q_proj", "o_proj"], max_steps=7, checkpoint_dir="/c")
    spec.save(tmp_path / "spec.json")
    assert TrainJobSpec.load(tmp_path / "spec.json") == spec


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown TrainJobSpec fields"):
        TrainJobSpec.from_dict({**BASE, "learning_rat": 1e-3})


def test_fingerprint_ignores_where_and_how_often_but_not_what() -> None:
    spec = TrainJobSpec(**BASE)
    elsewhere = dataclasses.replace(
        spec, output_dir="/x", checkpoint_dir="/y", progress_interval_s=9.0, max_dataset_bytes=9, max_dataset_rows=9
    )
    assert elsewhere.fingerprint() == spec.fingerprint()
    assert dataclasses.replace(spec, seed=1).fingerprint() != spec.fingerprint()


@pytest.mark.parametrize(
    ("max_steps", "epochs", "rows", "expected"),
    [(5, 1.0, 100, 5), (None, 1.0, 100, 7), (None, 2.0, 16, 2), (None, 0.01, 16, 1)],
)
def test_total_steps(max_steps, epochs, rows, expected) -> None:
    assert TrainJobSpec(**BASE, max_steps=max_steps, epochs=epochs).total_steps(rows) == expected
