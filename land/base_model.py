"""The land's base: a tiny Llama (or Qwen2) pretrained for a few minutes on generic text, built once and cached.

A random-weight base knows nothing, so "the adapter beats the base" would be empty. This one
reads `corpus` (the tasks' words in plain sentences, no task formats) with a BPE tokenizer
trained on the same text, so its embeddings and attention carry meaning an adapter can reuse.
Pretraining is the engine's own training loop (`gpu_engine.training.optimizer_loop`, the one
LoRA fine-tunes run): full-parameter AdamW on the packed corpus, the shared warmup + cosine
schedule decaying to a tenth of the peak, gradients clipped to norm 1. The cache folder is named
after a fingerprint of the config and `_FORMAT_VERSION`: change a field, get a new base.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gpu_engine.training.examples import Example, packed_examples
from land.corpus import corpus_lines

_FORMAT_VERSION = 3  # bump when the corpus or the loop changes what a config builds
_WEIGHT_DECAY = 0.01
_MAX_GRAD_NORM = 1.0
_MIN_LR_RATIO = 0.1  # the cosine ends at a tenth of the peak learning rate
ARCHS = ("llama", "qwen2")  # the families the land pretrains (gpu_engine.tiny builds them)


@dataclass(frozen=True)
class BaseModelConfig:
    """The base's family (`arch`), shape, corpus and tokenizer sizes, and its pretraining steps."""

    arch: str = "llama"
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 384
    vocab_size: int = 1024
    max_positions: int = 256
    corpus_lines: int = 6000
    seq_len_tokens: int = 64
    batch_size: int = 16
    steps: int = 1000
    learning_rate: float = 3e-3
    warmup_steps: int = 30
    seed: int = 0

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name not in ("arch", "seed") and not value > 0:
                raise ValueError(f"{field.name} must be > 0")
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise ValueError("hidden must be a multiple of heads, heads a multiple of kv_heads")
        if self.seq_len_tokens > self.max_positions:
            raise ValueError("seq_len_tokens must be <= max_positions")
        if self.warmup_steps >= self.steps:
            raise ValueError("warmup_steps must be < steps")

    def fingerprint(self) -> str:
        fields = dataclasses.asdict(self)
        if fields["arch"] == "llama":  # a Llama keeps the fingerprint it had before `arch` existed
            del fields["arch"]
        body = json.dumps({"v": _FORMAT_VERSION, **fields}, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:12]


Progress = Callable[[int, int, float], None]  # (step, total_steps, loss)


def built_base(cache_dir: str | Path, config: BaseModelConfig) -> Path | None:
    """The base's folder under `cache_dir` when it was built already, else None."""
    out = Path(cache_dir) / f"base-{config.fingerprint()}"
    return out if (out / "config.json").is_file() and (out / "pretraining.json").is_file() else None


def cached_base(cache_dir: str | Path, config: BaseModelConfig, on_step: Progress | None = None) -> Path:
    """The pretrained base in `<cache_dir>/base-<fingerprint>/`, built first if it is not there."""
    out = Path(cache_dir) / f"base-{config.fingerprint()}"
    if built_base(cache_dir, config) is not None:
        return out
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    build_base(tmp, config, on_step)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def build_base(out_dir: Path, config: BaseModelConfig, on_step: Progress | None = None) -> Path:
    """Tokenizer + a random model of `config.arch` + causal-LM pretraining on the generic corpus, saved in `out_dir`."""
    import torch
    from transformers import AutoModelForCausalLM

    from gpu_engine.tiny import build_tiny_model, build_tiny_tokenizer

    lines = list(corpus_lines(config.corpus_lines, config.seed))
    tokenizer = build_tiny_tokenizer(out_dir / "tokenizer", config.vocab_size, lines=lines)
    build_tiny_model(
        out_dir,
        arch=config.arch,
        hidden=config.hidden,
        layers=config.layers,
        heads=config.heads,
        kv_heads=config.kv_heads,
        intermediate=config.intermediate,
        seed=config.seed,
        init_std=0.02,
        max_position_embeddings=config.max_positions,
        tokenizer_dir=out_dir / "tokenizer",
    )
    shutil.rmtree(out_dir / "tokenizer")
    model = AutoModelForCausalLM.from_pretrained(str(out_dir), dtype=torch.float32)
    blocks = packed_examples(tokenizer(lines)["input_ids"], tokenizer.eos_token_id, config.seq_len_tokens)
    started = time.monotonic()
    losses = _pretrain(model, blocks, tokenizer.pad_token_id, config, on_step or (lambda step, total, loss: None))
    model.save_pretrained(str(out_dir))
    summary = {
        "config": dataclasses.asdict(config),
        "num_params": sum(p.numel() for p in model.parameters()),
        "num_blocks": len(blocks),
        "first_loss": losses[0],
        "final_loss": sum(losses[-20:]) / len(losses[-20:]),
        "pretrain_s": time.monotonic() - started,
    }
    (out_dir / "pretraining.json").write_text(json.dumps(summary, indent=2) + "\n")
    return out_dir


def _pretrain(model, blocks: list[Example], pad_id: int, config: BaseModelConfig, on_step: Progress) -> list[float]:
    """Every parameter trained by the engine's OptimizerLoop; the per-token loss of each step."""
    import torch

    from gpu_engine.training.batching import BatchPlan
    from gpu_engine.training.optimizer_loop import OptimizerLoop, StepDone
    from gpu_engine.training.schedule import LrSchedule

    plan = BatchPlan([len(block.input_ids) for block in blocks], config.batch_size, config.batch_size, config.seed)
    schedule = LrSchedule(config.learning_rate, config.steps, config.warmup_steps, "cosine", _MIN_LR_RATIO)
    loop = OptimizerLoop(
        model,
        blocks,
        plan,
        schedule,
        pad_id=pad_id,
        device=torch.device("cpu"),
        weight_decay=_WEIGHT_DECAY,
        max_grad_norm=_MAX_GRAD_NORM,
    )
    losses: list[float] = []

    def record(done: StepDone) -> None:
        losses.append(done.mean_loss())
        on_step(done.step, config.steps, losses[-1])

    loop.run(0, record)
    model.eval()
    return losses
