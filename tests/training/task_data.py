"""A small synthetic task a tiny model learns in a few steps, written as JSONL."""

from __future__ import annotations

import json
import random
from pathlib import Path

_WORDS = "the cat dog bird fish tree river city road house garden light night day".split()


def task_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    """ "<words> ->" answered " yes" when the words mention a cat, else " no"; prompts of 2-24 words."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(2, 24))]
        rows.append({"prompt": " ".join(words) + " ->", "completion": " yes" if "cat" in words else " no"})
    return rows


def write_task(path: Path, n: int = 64, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in task_rows(n, seed)))
    return path
