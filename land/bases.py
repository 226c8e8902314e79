"""The land's bases: which models it pretrains, under which names, and the larger few-shot base.

LoRA Land is a matrix of bases × tasks. The land's rows are two small bases of two families (a
Llama and a Qwen2, ~1M parameters each, pretrained alike on the same kind of generic text), each
fine-tuned on every task; its extra column is a base several times larger (~3.7M parameters, as
large as a few minutes of pretraining on a 2-core CPU allow), pretrained the same way on longer
blocks so that a few-shot prompt is within what it has seen, and served without adapters — the
land's stand-in for the paper's GPT-4.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from land.base_model import BaseModelConfig, built_base, cached_base

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class LandBase:
    """A base of the land: its name in the report (`bases.<name>` in land.json) and how it is built."""

    name: str
    model: BaseModelConfig

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"base name {self.name!r} must match {_NAME_RE.pattern}")


LLAMA = LandBase("llama", BaseModelConfig())
QWEN2 = LandBase("qwen2", BaseModelConfig(arch="qwen2", seed=1))
DEFAULT_BASES = (LLAMA, QWEN2)
# 3.5x the parameters of the small bases; 256-token blocks (the small ones read 64) so a prompt of a
# few examples is not longer than anything it was trained on; as many tokens seen as the small ones
FEWSHOT_BASE = LandBase(
    "llama-large",
    BaseModelConfig(
        hidden=256,
        layers=4,
        heads=8,
        kv_heads=4,
        intermediate=768,
        max_positions=512,
        seq_len_tokens=256,
        batch_size=8,
        steps=500,
    ),
)


def model_summary(base: LandBase, base_dir: Path) -> dict:
    """A built base as land.json records it: its config, its name on the wire, what pretraining measured."""
    pretraining = json.loads((Path(base_dir) / "pretraining.json").read_text())
    return {
        "base_name": Path(base_dir).name,
        "config": dataclasses.asdict(base.model),
        "num_params": pretraining.get("num_params"),
        "final_loss": pretraining["final_loss"],
        "pretrain_s": pretraining.get("pretrain_s"),
    }


def base_with_progress(workdir: Path, config: BaseModelConfig, console: Console, name: str = "base") -> Path:
    """The land's base for `config` under `workdir`: pretrained once with a bar on `console`, then cached."""
    built = built_base(workdir, config)
    if built is not None:
        return built
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn(f"[bold]pretraining {name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"),
        TimeRemainingColumn(),
        console=console,
    )
    with bar:
        progress_id = bar.add_task("base", total=config.steps, loss="")
        return cached_base(
            workdir, config, lambda step, total, loss: bar.update(progress_id, completed=step, loss=f"loss {loss:.3f}")
        )
