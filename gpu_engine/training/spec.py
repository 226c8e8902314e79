"""TrainJobSpec: everything one fine-tune job needs, frozen and validated at construction."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpu_engine.families.registry import FAMILIES
from gpu_engine.training.dataset import MAX_DATASET_ROWS
from gpu_engine.training.dataset_source import MAX_DATASET_BYTES
from gpu_engine.training.defaults import DEFAULT_EPOCHS, DEFAULT_MAX_SEQ_LEN, LORA_LAND

# every projection some served family has; which of them a base has is checked against its family
# when the job loads it (`defaults.resolve_targets`)
LORA_TARGETS = tuple(dict.fromkeys(name for family in FAMILIES.values() for name in family.projections))
LR_SCHEDULERS = ("cosine", "linear", "constant")
QUANTIZE_MODES = ("auto", "nf4", "none")
# fields that change what a step computes: a checkpoint is only resumed under the same values
_RUNTIME_ONLY = (
    "output_dir",
    "checkpoint_dir",
    "checkpoint_every_steps",
    "progress_interval_s",
    "device",
    "max_dataset_bytes",
    "max_dataset_rows",
)


@dataclass(frozen=True)
class TrainJobSpec:
    """One LoRA fine-tune; defaults are LoRA Land's (r 8, alpha 16, q/v, lr 2e-4, cosine, 3%). The
    training worker fills them by the base's size instead (`defaults.choose_settings`).

    Grad accumulation is `effective_batch_size // micro_batch_size` micro-batches per optimizer
    step. `max_steps`, when set, wins over `epochs`; `epochs` runs at least `min_steps` steps.
    `checkpoint_dir` None: no checkpoints, no resume. `eval_fraction` of the rows (at most
    `max_eval_rows`) are held out for eval loss.
    """

    base_model_path: str
    output_dir: str
    dataset_path: str
    prompt_field: str = "prompt"
    completion_field: str = "completion"
    r: int = LORA_LAND.r
    alpha: float = LORA_LAND.alpha
    dropout: float = 0.05
    target_modules: tuple[str, ...] = LORA_LAND.target_modules
    learning_rate: float = LORA_LAND.learning_rate
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    effective_batch_size: int = 16
    micro_batch_size: int = 4
    max_steps: int | None = None
    epochs: float | None = DEFAULT_EPOCHS
    min_steps: int = 1
    max_seq_len: int = DEFAULT_MAX_SEQ_LEN
    seed: int = 0
    quantize: str = "auto"  # auto: nf4 on CUDA, the plain base elsewhere
    device: str = "auto"  # auto: cuda when available, else cpu
    eval_fraction: float = 0.05
    max_eval_rows: int = 64
    checkpoint_dir: str | None = None
    checkpoint_every_steps: int = 50
    progress_interval_s: float = 2.0
    max_dataset_bytes: int = MAX_DATASET_BYTES
    max_dataset_rows: int = MAX_DATASET_ROWS

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        for name in ("base_model_path", "output_dir", "dataset_path", "prompt_field", "completion_field"):
            if not getattr(self, name):
                raise ValueError(f"{name} must not be empty")
        if self.prompt_field == self.completion_field:
            raise ValueError("prompt_field and completion_field must differ")
        if not 1 <= self.r <= 1024:
            raise ValueError("r must be within [1, 1024]")
        _positive("alpha", self.alpha)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be within [0, 1)")
        if not self.target_modules:
            raise ValueError("target_modules must name at least one projection")
        unknown = sorted(set(self.target_modules) - set(LORA_TARGETS))
        if unknown or len(set(self.target_modules)) != len(self.target_modules):
            raise ValueError(f"target_modules must be distinct names among {LORA_TARGETS}; bad: {unknown}")
        _positive("learning_rate", self.learning_rate)
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise ValueError(f"lr_scheduler must be one of {LR_SCHEDULERS}")
        if not 0.0 <= self.warmup_ratio <= 0.5:
            raise ValueError("warmup_ratio must be within [0, 0.5]")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError("weight_decay must be >= 0")
        if self.max_grad_norm is not None:
            _positive("max_grad_norm", self.max_grad_norm)
        if self.micro_batch_size < 1 or self.effective_batch_size < 1:
            raise ValueError("micro_batch_size and effective_batch_size must be >= 1")
        if self.effective_batch_size % self.micro_batch_size:
            raise ValueError(
                f"effective_batch_size ({self.effective_batch_size}) must be a multiple of "
                f"micro_batch_size ({self.micro_batch_size})"
            )
        if self.max_steps is None and self.epochs is None:
            raise ValueError("give max_steps or epochs")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be >= 1")
        if self.epochs is not None:
            _positive("epochs", self.epochs)
        if self.min_steps < 1:
            raise ValueError("min_steps must be >= 1")
        if self.max_seq_len < 8:
            raise ValueError("max_seq_len must be >= 8")
        if self.quantize not in QUANTIZE_MODES:
            raise ValueError(f"quantize must be one of {QUANTIZE_MODES}")
        if self.device != "auto" and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError("device must be 'auto', 'cpu' or 'cuda[:N]'")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError("eval_fraction must be within [0, 1)")
        if self.max_eval_rows < 0:
            raise ValueError("max_eval_rows must be >= 0")
        if self.checkpoint_every_steps < 1:
            raise ValueError("checkpoint_every_steps must be >= 1")
        if not (math.isfinite(self.progress_interval_s) and self.progress_interval_s >= 0):
            raise ValueError("progress_interval_s must be >= 0")
        if self.max_dataset_bytes < 1 or self.max_dataset_rows < 1:
            raise ValueError("max_dataset_bytes and max_dataset_rows must be >= 1")

    @property
    def grad_accum_steps(self) -> int:
        return self.effective_batch_size // self.micro_batch_size

    def total_steps(self, num_train_rows: int) -> int:
        """Optimizer steps of the whole job for a training split of `num_train_rows`."""
        if self.max_steps is not None:
            return self.max_steps
        return max(self.min_steps, math.ceil(self.epochs * num_train_rows / self.effective_batch_size))

    def fingerprint(self) -> str:
        """Hash of the fields that shape the computation: resume only under an equal one."""
        fields = {k: v for k, v in self.to_dict().items() if k not in _RUNTIME_ONLY}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        body = dataclasses.asdict(self)
        body["target_modules"] = list(self.target_modules)
        return body

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> TrainJobSpec:
        """Raises ValueError on unknown or missing fields and on broken rules."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(body) - names)
        if unknown:
            raise ValueError(f"unknown TrainJobSpec fields: {unknown}")
        try:
            return cls(**body)
        except TypeError as exc:
            raise ValueError(str(exc)) from exc

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> TrainJobSpec:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0")
