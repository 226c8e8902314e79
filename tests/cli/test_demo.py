"""`lorastream demo` end to end on a tiny base (the land's real base takes minutes to pretrain):
adapters built once and keyed by their inputs, served through the embedded broker, shown side by side."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

import cli.demo
import land.artifacts
from cli.demo import DEMO_TASKS, run_demo
from land.artifacts import TaskAdapter
from land.land import LandConfig

QUICK = LandConfig(steps=2, batch_size=4, max_seq_len=256)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    from gpu_engine.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("base") / "base-tiny", hidden=32, layers=1, heads=2, kv_heads=1)


def test_adapter_folders_are_keyed_by_their_inputs(tmp_path, tiny_base):
    def path(task="sentiment", base=tiny_base, settings=QUICK):
        return TaskAdapter(tmp_path, base, task, settings).path

    assert path() == path()
    assert path().name.startswith("sentiment-")
    other_base = tiny_base.with_name("base-other")
    assert len({path(), path(task="topic"), path(base=other_base), path(settings=QUICK.replace(steps=3))}) == 4


async def test_demo_answers_from_base_and_each_adapter_and_reuses_its_builds(tmp_path, tiny_base, monkeypatch):
    monkeypatch.setattr(land.artifacts, "land_base", lambda cache_dir, on_step=None: tiny_base)
    out = io.StringIO()
    monkeypatch.setattr(cli.demo, "console", Console(file=out, width=220, highlight=False))
    cache = tmp_path / "cache"

    assert await run_demo(str(cache), max_new_tokens=4, settings=QUICK) == 0
    first = out.getvalue()
    adapter_dirs = sorted(p.name.split("-")[0] for p in (cache / "adapters").iterdir() if not p.name.startswith("."))
    assert adapter_dirs == sorted(DEMO_TASKS)
    header = next(line for line in first.splitlines() if "land/sentiment" in line and "base" in line)
    assert all(f"land/{task}" in header for task in DEMO_TASKS)
    assert first.count("expected:") == len(DEMO_TASKS)
    assert "12 requests" in first and "Error" not in first

    import gpu_engine.training.trainer as trainer

    def no_training(*args, **kwargs):
        raise AssertionError("a rerun with unchanged inputs trained again")

    monkeypatch.setattr(trainer, "run_training", no_training)
    out.truncate(0)
    assert await run_demo(str(cache), max_new_tokens=4, settings=QUICK) == 0
    assert "12 requests" in out.getvalue()
