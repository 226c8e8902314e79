"""Learning-rate multipliers: linear warmup, then cosine decay to 0, linear decay to 0, or flat.

Pure Python; the trainer sets lr = learning_rate * lr_multiplier(step, ...) before each optimizer
step, so the schedule has no state to checkpoint. Same values as transformers'
get_{cosine,linear,constant}_schedule_with_warmup.
"""

from __future__ import annotations

import math


def warmup_steps_for(total_steps: int, warmup_ratio: float) -> int:
    return math.ceil(total_steps * warmup_ratio)


def lr_multiplier(step: int, total_steps: int, warmup_steps: int, kind: str) -> float:
    """Multiplier of the base learning rate for optimizer step `step` (0-based)."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    if kind == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if kind == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    raise ValueError(f"unknown lr schedule {kind!r}")
