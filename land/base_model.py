"""The land's base: a tiny Llama pretrained for a few minutes on generic text, built once and cached.

A random-weight base knows nothing, so "the adapter beats the base" would be empty. This one
reads `corpus` (the tasks' words in plain sentences, no task formats) with a BPE tokenizer
trained on the same text, so its embeddings and attention carry meaning an adapter can reuse.
The cache folder is named after a fingerprint of the config: change a field, get a new base.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from land.corpus import corpus_lines

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")
_FORMAT_VERSION = 2  # bump when the corpus or the loop changes what a config builds


@dataclass(frozen=True)
class BaseModelConfig:
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
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name != "seed" and not value > 0:
                raise ValueError(f"{field.name} must be > 0")
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise ValueError("hidden must be a multiple of heads, heads a multiple of kv_heads")
        if self.seq_len_tokens > self.max_positions:
            raise ValueError("seq_len_tokens must be <= max_positions")
        if self.warmup_steps >= self.steps:
            raise ValueError("warmup_steps must be < steps")

    def fingerprint(self) -> str:
        body = json.dumps({"v": _FORMAT_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:12]


Progress = Callable[[int, int, float], None]  # (step, total_steps, loss)


def cached_base(cache_dir: str | Path, config: BaseModelConfig, on_step: Progress | None = None) -> Path:
    """The pretrained base in `<cache_dir>/base-<fingerprint>/`, built first if it is not there."""
    out = Path(cache_dir) / f"base-{config.fingerprint()}"
    if (out / "config.json").is_file() and (out / "pretraining.json").is_file():
        return out
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    build_base(tmp, config, on_step)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def build_base(out_dir: Path, config: BaseModelConfig, on_step: Progress | None = None) -> Path:
    """Tokenizer + random Llama + causal-LM pretraining on the generic corpus, saved in `out_dir`."""
    import torch
    from transformers import AutoModelForCausalLM

    from gpu_engine.tiny import build_tiny_model

    lines = list(corpus_lines(config.corpus_lines, config.seed))
    tokenizer = train_tokenizer(out_dir / "tokenizer", lines, config.vocab_size)
    build_tiny_model(
        out_dir,
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
    blocks = _token_blocks(tokenizer, lines, config.seq_len_tokens)  # blocks: [N, seq_len]
    started = time.monotonic()
    losses = _pretrain(model, blocks, config, on_step or (lambda step, total, loss: None))
    model.save_pretrained(str(out_dir))
    summary = {
        "config": dataclasses.asdict(config),
        "num_params": sum(p.numel() for p in model.parameters()),
        "num_blocks": int(blocks.shape[0]),
        "first_loss": losses[0],
        "final_loss": sum(losses[-20:]) / len(losses[-20:]),
        "pretrain_s": time.monotonic() - started,
    }
    (out_dir / "pretraining.json").write_text(json.dumps(summary, indent=2) + "\n")
    return out_dir


def train_tokenizer(out_dir: Path, lines: list[str], vocab_size: int):
    """A byte-level BPE learned from `lines`, saved as a PreTrainedTokenizerFast that adds <s>."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        lines,
        trainer=trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    bpe.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", bpe.token_to_id("<s>"))]
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer


def _token_blocks(tokenizer, lines: list[str], seq_len_tokens: int):
    """Every line as <s> … </s>, concatenated and cut into [N, seq_len_tokens] blocks."""
    import torch

    stream: list[int] = []
    for ids in tokenizer(lines)["input_ids"]:
        stream.extend(ids)
        stream.append(tokenizer.eos_token_id)
    num_blocks = len(stream) // seq_len_tokens
    return torch.tensor(stream[: num_blocks * seq_len_tokens]).view(num_blocks, seq_len_tokens)


def _pretrain(model, blocks, config: BaseModelConfig, on_step: Progress) -> list[float]:
    """AdamW with linear warmup and cosine decay; random blocks per step from a seeded generator."""
    import torch

    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.01)
    model.train()
    losses = []
    for step in range(config.steps):
        if step < config.warmup_steps:
            scale = (step + 1) / config.warmup_steps
        else:
            progress = (step - config.warmup_steps) / (config.steps - config.warmup_steps)
            scale = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
        for group in optimizer.param_groups:
            group["lr"] = config.learning_rate * scale
        batch = blocks[torch.randint(len(blocks), (config.batch_size,), generator=generator)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        on_step(step + 1, config.steps, losses[-1])
    model.eval()
    return losses
