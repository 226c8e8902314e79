"""Training events: a fine-tune job request and the progress events it produces."""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from schemas.errors import ErrorCode
from schemas.limits import SCHEMA_VERSION, AdapterId, RequestId

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LoraTarget = Annotated[str, msgspec.Meta(pattern=r"^(q|k|v|o|gate|up|down)_proj$")]


class Hyperparameters(msgspec.Struct, frozen=True):
    """LoRA Land's defaults: r 8, alpha 16, dropout 0.05, q/v targets, lr 2e-4, cosine, 3% warmup."""

    r: Annotated[int, msgspec.Meta(ge=1, le=256)] = 8
    alpha: Annotated[float, msgspec.Meta(gt=0)] = 16.0
    dropout: Annotated[float, msgspec.Meta(ge=0.0, lt=1.0)] = 0.05
    target_modules: Annotated[list[LoraTarget], msgspec.Meta(min_length=1, max_length=7)] = msgspec.field(
        default_factory=lambda: ["q_proj", "v_proj"]
    )
    learning_rate: Annotated[float, msgspec.Meta(gt=0, le=1.0)] = 2e-4
    lr_scheduler: Annotated[str, msgspec.Meta(pattern=r"^(cosine|linear|constant)$")] = "cosine"
    warmup_ratio: Annotated[float, msgspec.Meta(ge=0.0, le=0.5)] = 0.03
    effective_batch_size: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 16
    micro_batch_size: Annotated[int, msgspec.Meta(ge=1, le=512)] = 4
    max_steps: Annotated[int, msgspec.Meta(ge=1)] | None = None
    epochs: Annotated[float, msgspec.Meta(gt=0, le=100)] | None = 1.0
    max_seq_len: Annotated[int, msgspec.Meta(ge=8, le=32768)] = 512
    seed: int = 0
    quantize: Annotated[str, msgspec.Meta(pattern=r"^(auto|nf4|none)$")] = "auto"


class DatasetRef(msgspec.Struct, frozen=True):
    """JSONL with prompt/completion fields at `uri` (local path or s3://), or a built-in task."""

    uri: str | None = None
    task: str | None = None
    prompt_field: str = "prompt"
    completion_field: str = "completion"


class TrainingRequest(msgspec.Struct, frozen=True, tag="train", tag_field="kind"):
    job_id: RequestId
    adapter_id: AdapterId
    dataset: DatasetRef
    base_model: str | None = None  # None: the base the worker serves
    hyperparameters: Hyperparameters = Hyperparameters()
    overwrite: bool = False
    attempt: int = 0
    schema_version: int = SCHEMA_VERSION


class JobState(str, enum.Enum):
    QUEUED = "queued"
    STARTED = "started"
    PROGRESS = "progress"
    CHECKPOINTED = "checkpointed"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TrainingEvent(msgspec.Struct, frozen=True, tag="training_event", tag_field="kind"):
    """One state change or progress report of a job; fields not relevant to `state` stay None."""

    job_id: str
    state: JobState
    ts_ms: int
    attempt: int = 0
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    eval_loss: float | None = None
    learning_rate: float | None = None
    tokens_per_s: float | None = None
    eta_s: float | None = None
    quantization: str | None = None  # "nf4" or "none": what the job actually used
    adapter_id: str | None = None
    adapter_uri: str | None = None
    checksum: str | None = None
    metrics: dict[str, float] = {}
    code: ErrorCode | None = None
    reason: str | None = None
    schema_version: int = SCHEMA_VERSION


class CancelJob(msgspec.Struct, frozen=True, tag="cancel_job", tag_field="kind"):
    job_id: RequestId
    schema_version: int = SCHEMA_VERSION
