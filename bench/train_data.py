"""The training benchmark's inputs: a random-init Llama-shaped model and synthetic prompt/completion rows."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

MODEL_SHAPE = dict(
    hidden_size=512, intermediate_size=1408, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4
)
_WORDS = (
    "good great fine bad awful poor model adapter token stream kafka batch cat dog bird tree river city "
    "road house quick slow bright dark small large green blue red old new warm cold"
).split()
_POSITIVE, _NEGATIVE = {"good", "great", "fine", "bright", "warm"}, {"bad", "awful", "poor", "dark", "cold"}


def build_model(out: Path, vocab_size: int, shape: dict = MODEL_SHAPE, seed: int = 0) -> Path:
    """A random-init Llama with the local tiny tokenizer; rows of the vocabulary beyond it stay unused."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from gpu_engine.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(out)
    config = LlamaConfig(
        vocab_size=max(vocab_size, len(tokenizer)),
        max_position_embeddings=1024,
        initializer_range=0.02,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **shape,
    )
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(str(out))
    return out


def synthetic_rows(n: int, seed: int) -> list[dict[str, str]]:
    """Half sentiment labels of long reviews, half copies of a review's last words: varied lengths."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(8, 160))]
        if i % 2 == 0:
            score = sum(w in _POSITIVE for w in words) - sum(w in _NEGATIVE for w in words)
            rows.append(
                {
                    "prompt": f"Review: {' '.join(words)}\nSentiment:",
                    "completion": " positive" if score >= 0 else " negative",
                }
            )
        else:
            tail = words[-rng.randint(3, 12) :]
            rows.append({"prompt": f"Text: {' '.join(words)}\nLast words:", "completion": " " + " ".join(tail)})
    return rows


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path
