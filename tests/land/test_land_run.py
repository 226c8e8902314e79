"""`lorastream land` end to end, shrunk to seconds: two tiny bases of two families (Llama, Qwen2) and a
tiny few-shot base, a few pretraining steps each, one task, two fine-tune steps, four test rows — on
the embedded Tansu broker, with the real training workers and one inference consumer per base."""

from __future__ import annotations

import dataclasses
import json

from rich.console import Console

from land.base_model import BaseModelConfig
from land.bases import LandBase
from land.land import LandConfig, run_land

TINY_BASE = BaseModelConfig(
    hidden=32,
    layers=1,
    heads=2,
    kv_heads=1,
    intermediate=64,
    vocab_size=400,
    corpus_lines=200,
    seq_len_tokens=32,
    batch_size=4,
    steps=6,
    warmup_steps=2,
)
TINY_BASES = (
    LandBase("llama", TINY_BASE),
    LandBase("qwen2", dataclasses.replace(TINY_BASE, arch="qwen2", seed=1)),
)
TINY_FEWSHOT = LandBase("big", dataclasses.replace(TINY_BASE, hidden=64, seq_len_tokens=256))


async def test_land_runs_the_matrix_through_training_events_and_writes_its_report(tmp_path):
    config = LandConfig(
        workdir=str(tmp_path / "work"),
        docs_dir=str(tmp_path / "docs"),
        tasks=("sentiment",),
        bases=TINY_BASES,
        fewshot_base=TINY_FEWSHOT,
        max_shots=1,
        pretrain_processes=1,  # side-by-side builds: test_land_matrix
        steps=2,
        batch_size=4,
        num_workers=1,
        max_test_rows=4,
    )
    console = Console(record=True, width=160)
    outcome = await run_land(config, console)
    assert set(outcome.trained) == {"llama", "qwen2"}
    for name, (trained,) in outcome.trained.items():
        assert trained.adapter_id == f"land/{name}/sentiment" and trained.completed.total_steps == 2
        assert trained.registered.adapter_id == trained.adapter_id
        assert trained.registered.checksum == trained.completed.checksum
    result = outcome.result
    assert list(result.bases) == ["llama", "qwen2"] and result.num_requests == 2 * 2 * 4 + 4
    for scores in result.bases.values():
        (task,) = scores.tasks
        assert task.num_rows == 4 and task.num_failed_base == task.num_failed_adapter == 0
    (few,) = result.fewshot.scores
    assert result.fewshot.base == "big" and few.num_rows == 4 and few.num_failed == 0 and few.shots == 1
    assert set(outcome.timings_s) == {"base_s", "train_s", "eval_s", "total_s"}
    body = json.loads((tmp_path / "docs" / "bench" / "land.json").read_text())
    for name, scores in result.bases.items():
        assert body["bases"][name]["mean_gain_points"] == scores.mean_gain_points
        assert body["bases"][name]["tasks"]["sentiment"]["adapter"] == scores.tasks[0].adapter
        assert body["training"][name]["sentiment"]["version"] == outcome.trained[name][0].registered.version
    assert body["fewshot"]["tasks"]["sentiment"]["score"] == few.score and body["config"]["steps"] == 2
    assert body["models"]["qwen2"]["config"]["arch"] == "qwen2"
    doc = (tmp_path / "docs" / "land.md").read_text()
    assert f"**llama: mean gain {result.bases['llama'].mean_gain_points:+.1f} points**" in doc
    assert f"**qwen2: mean gain {result.bases['qwen2'].mean_gain_points:+.1f} points**" in doc
    assert (tmp_path / "docs" / "bench" / "land.png").is_file()
    printed = console.export_text()
    assert "llama: mean gain" in printed and "qwen2: mean gain" in printed and "few-shot big on" in printed
    base_dirs = list((tmp_path / "work").glob("base-*"))
    assert len(base_dirs) == 3 and all((d / "pretraining.json").is_file() for d in base_dirs)  # cached
