"""The land's base: pretrained by the engine's optimizer loop on the shared schedule, it learns,
and it is built once per config fingerprint."""

from __future__ import annotations

import dataclasses
import json

import pytest

from gpu_engine.training.optimizer_loop import OptimizerLoop
from gpu_engine.training.schedule import LrSchedule
from land.base_model import BaseModelConfig, cached_base

SMALL_BASE = BaseModelConfig(
    hidden=32,
    layers=1,
    heads=2,
    kv_heads=1,
    intermediate=64,
    vocab_size=300,
    corpus_lines=300,
    seq_len_tokens=32,
    batch_size=8,
    steps=40,
    warmup_steps=4,
)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """A tiny model trains fastest on one thread; on a busy 2-core box, two threads spin-wait."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_pretraining_runs_through_the_engines_loop_and_learns(tmp_path, monkeypatch):
    steps = []
    original = OptimizerLoop.step

    def spy(self, step, *args):
        done = original(self, step, *args)
        steps.append((type(self.model).__name__, done.step, done.learning_rate))
        return done

    monkeypatch.setattr(OptimizerLoop, "step", spy)
    progress = []
    out = cached_base(tmp_path, SMALL_BASE, lambda step, total, loss: progress.append((step, total, loss)))

    schedule = LrSchedule(SMALL_BASE.learning_rate, SMALL_BASE.steps, SMALL_BASE.warmup_steps, "cosine", 0.1)
    assert steps == [("LlamaForCausalLM", s + 1, schedule.learning_rate_at(s)) for s in range(SMALL_BASE.steps)]
    assert [(step, total) for step, total, _ in progress] == [(s, SMALL_BASE.steps) for s in range(1, 41)]
    summary = json.loads((out / "pretraining.json").read_text())
    assert summary["first_loss"] == progress[0][2]
    assert summary["final_loss"] < summary["first_loss"] - 1.0  # from ~ln(300) = 5.7 it must drop well
    assert out.name == f"base-{SMALL_BASE.fingerprint()}" and (out / "config.json").is_file()


def test_a_cached_base_is_reused_and_a_changed_field_builds_another(tmp_path, monkeypatch):
    tiny = dataclasses.replace(SMALL_BASE, steps=3, warmup_steps=1)
    first = cached_base(tmp_path, tiny)
    built = []
    monkeypatch.setattr(OptimizerLoop, "step", lambda *args: built.append(args))
    assert cached_base(tmp_path, tiny) == first and built == []  # from the cache: no training
    other = dataclasses.replace(tiny, seed=1)
    assert other.fingerprint() != tiny.fingerprint()


def test_land_base_only_prints_the_cached_base_folder(tmp_path, capsys):
    """Issue 17: where the land's base lives was found only through `ls`: `land --base-only` says it."""
    from cli.land_commands import print_base
    from cli.main import build_parser
    from land.bases import LandBase
    from land.land import LandConfig

    args = build_parser().parse_args(["land", "--base-only", "--workdir", str(tmp_path)])
    assert args.base_only and args.workdir == str(tmp_path)
    config = LandConfig(workdir=str(tmp_path), bases=(LandBase("llama", SMALL_BASE),))
    assert print_base(config) == 0
    built = capsys.readouterr()
    assert built.out == f"{cached_base(tmp_path, SMALL_BASE)}\n"
    assert print_base(config) == 0  # cached: the same folder, and no progress bar on stderr
    again = capsys.readouterr()
    assert again.out == built.out and again.err == ""
