"""The outcome of one fine-tune, saved next to its adapter so a rerun of a finished job reuses it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from gpu_engine.adapter_files import adapter_checksum, is_adapter_dir
from gpu_engine.training.spec import TrainJobSpec

RESULT_FILE = "training_result.json"  # next to the saved adapter: a rerun of a finished job reuses it


@dataclass(frozen=True)
class TrainResult:
    adapter_dir: str
    checksum: str
    steps: int
    final_loss: float | None  # mean completion-token loss of the last report window
    eval_loss: float | None  # on the held-out rows; None when none were held out
    train_tokens: int  # real tokens processed by this run (pads left out)
    train_time_s: float  # first micro-batch to last optimizer step of this run
    quantization: str
    device: str
    resumed_from_step: int
    fingerprint: str

    @property
    def tokens_per_s(self) -> float:
        return self.train_tokens / self.train_time_s if self.train_time_s > 0 else 0.0

    def metrics(self) -> dict[str, float]:
        values = {
            "steps": self.steps,
            "final_loss": self.final_loss,
            "eval_loss": self.eval_loss,
            "train_tokens": self.train_tokens,
            "train_time_s": self.train_time_s,
            "tokens_per_s": self.tokens_per_s,
            "resumed_from_step": self.resumed_from_step,
        }
        return {k: float(v) for k, v in values.items() if v is not None}


def finished_result(spec: TrainJobSpec) -> TrainResult | None:
    """The result of an earlier run of the same spec whose adapter is still intact."""
    try:
        body = json.loads((Path(spec.output_dir) / RESULT_FILE).read_text())
        result = TrainResult(**body)
    except (OSError, json.JSONDecodeError, TypeError):
        return None
    if result.fingerprint != spec.fingerprint() or not is_adapter_dir(spec.output_dir):
        return None
    return result if adapter_checksum(spec.output_dir) == result.checksum else None
