"""`lorastream land` end to end, shrunk to seconds: a few pretraining steps, one task, two fine-tune
steps, four test rows — on the embedded Tansu broker, with the real training worker and service."""

from __future__ import annotations

import json

from rich.console import Console

from land.base_model import BaseModelConfig
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


async def test_land_runs_through_training_events_and_writes_its_report(tmp_path):
    config = LandConfig(
        workdir=str(tmp_path / "work"),
        docs_dir=str(tmp_path / "docs"),
        tasks=("sentiment",),
        base=TINY_BASE,
        steps=2,
        batch_size=4,
        num_workers=1,
        max_test_rows=4,
    )
    console = Console(record=True, width=120)
    outcome = await run_land(config, console)
    (trained,) = outcome.trained
    assert trained.adapter_id == "land/sentiment" and trained.completed.total_steps == 2
    assert (
        trained.registered.adapter_id == "land/sentiment" and trained.registered.checksum == trained.completed.checksum
    )
    (task,) = outcome.result.tasks
    assert task.num_rows == 4 and task.num_failed_base == task.num_failed_adapter == 0
    assert set(outcome.timings_s) == {"base_s", "train_s", "eval_s", "total_s"}
    body = json.loads((tmp_path / "docs" / "bench" / "land.json").read_text())
    assert body["tasks"]["sentiment"]["adapter"] == task.adapter and body["config"]["steps"] == 2
    assert body["training"]["sentiment"]["version"] == trained.registered.version
    doc = (tmp_path / "docs" / "land.md").read_text()
    assert f"**Mean gain: {outcome.result.mean_gain_points:+.1f} points**" in doc
    assert (tmp_path / "docs" / "bench" / "land.png").is_file()
    assert "mean gain" in console.export_text()
    base_dirs = list((tmp_path / "work").glob("base-*"))
    assert len(base_dirs) == 1 and (base_dirs[0] / "pretraining.json").is_file()  # cached for the next run
