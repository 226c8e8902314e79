"""The learning-rate schedule of every training loop here: linear warmup, then a decay.

Pure Python. `OptimizerLoop` sets lr = `LrSchedule.learning_rate_at(step)` before each optimizer
step, so the schedule has no state to checkpoint. After `warmup_steps` the rate decays along a
cosine, a line or not at all, from the peak down to `min_ratio` of it. With `min_ratio` 0 the
values are transformers' get_{cosine,linear,constant}_schedule_with_warmup; a cosine with a floor
is its get_cosine_with_min_lr_schedule_with_warmup(min_lr_rate=min_ratio). LoRA fine-tunes decay
to 0; the land's base pretraining decays to a tenth of its peak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULE_KINDS = ("cosine", "linear", "constant")


def warmup_steps_for(total_steps: int, warmup_ratio: float) -> int:
    return math.ceil(total_steps * warmup_ratio)


def lr_multiplier(step: int, total_steps: int, warmup_steps: int, kind: str, min_ratio: float = 0.0) -> float:
    """Multiplier of the peak learning rate for optimizer step `step` (0-based)."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    if kind == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if kind == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif kind == "linear":
        decay = 1.0 - progress
    else:
        raise ValueError(f"unknown lr schedule {kind!r}")
    return min_ratio + (1.0 - min_ratio) * max(0.0, decay)


@dataclass(frozen=True)
class LrSchedule:
    """The rate of each of `total_steps` optimizer steps, peaking at `learning_rate`."""

    learning_rate: float
    total_steps: int
    warmup_steps: int
    kind: str = "cosine"
    min_ratio: float = 0.0  # the decay ends at learning_rate * min_ratio

    def __post_init__(self) -> None:
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError("learning_rate must be > 0")
        if self.total_steps < 1:
            raise ValueError("total_steps must be >= 1")
        if not 0 <= self.warmup_steps <= self.total_steps:
            raise ValueError("warmup_steps must be within [0, total_steps]")
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(f"kind must be one of {SCHEDULE_KINDS}")
        if not 0.0 <= self.min_ratio < 1.0:
            raise ValueError("min_ratio must be within [0, 1)")

    def learning_rate_at(self, step: int) -> float:
        """The learning rate of optimizer step `step` (0-based)."""
        return self.learning_rate * lr_multiplier(step, self.total_steps, self.warmup_steps, self.kind, self.min_ratio)
