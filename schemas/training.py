"""Training events: a fine-tune job request and the progress events it produces."""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from schemas.errors import ErrorCode
from schemas.limits import (
    MAX_LORA_ALPHA,
    MAX_METRICS,
    MAX_TRAINING_RANK,
    MAX_TRAINING_STEPS,
    SCHEMA_VERSION,
    AdapterId,
    Attempt,
    BaseModelName,
    Checksum,
    Count,
    EpochMs,
    FieldName,
    Message,
    MetricName,
    RequestId,
    SchemaVersion,
    Seed,
    TaskName,
    Uri,
)

# every projection name of a served family (gpu_engine/families); whether the worker's base has it
# is checked when the job loads the base (`invalid_spec` otherwise)
LORA_TARGETS = (
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",  # llama, gemma, qwen
    "qkv_proj", "gate_up_proj",  # phi3's fused projections
    "dense", "fc1", "fc2",  # phi
)
LoraTarget = Annotated[str, msgspec.Meta(pattern=r"^((q|k|v|o|gate|up|down|qkv|gate_up)_proj|dense|fc1|fc2)\Z")]


class Hyperparameters(msgspec.Struct, frozen=True):
    """A fine-tune's settings. Those that default to None are chosen by the worker from the size of
    its base (LoRA Land's r 8, alpha 16, q/v, lr 2e-4, 1 epoch for bases of 1B parameters and more;
    larger rank, every projection and a higher rate for smaller ones: docs/training.md); `alpha`
    unset is twice `r`; `max_seq_len` unset is 512, and any value above the base's positions is
    clamped to them. The rest are LoRA Land's: dropout 0.05, cosine, 3% warmup, batch 16.
    """

    r: Annotated[int, msgspec.Meta(ge=1, le=MAX_TRAINING_RANK)] | None = None
    alpha: Annotated[float, msgspec.Meta(gt=0, le=MAX_LORA_ALPHA)] | None = None
    dropout: Annotated[float, msgspec.Meta(ge=0.0, lt=1.0)] = 0.05
    target_modules: (
        Annotated[list[LoraTarget], msgspec.Meta(min_length=1, max_length=len(LORA_TARGETS))] | None
    ) = None
    learning_rate: Annotated[float, msgspec.Meta(gt=0, le=1.0)] | None = None
    lr_scheduler: Annotated[str, msgspec.Meta(pattern=r"^(cosine|linear|constant)\Z")] = "cosine"
    warmup_ratio: Annotated[float, msgspec.Meta(ge=0.0, le=0.5)] = 0.03
    effective_batch_size: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 16
    micro_batch_size: Annotated[int, msgspec.Meta(ge=1, le=512)] = 4
    max_steps: Annotated[int, msgspec.Meta(ge=1, le=MAX_TRAINING_STEPS)] | None = None
    epochs: Annotated[float, msgspec.Meta(gt=0, le=100)] | None = None
    max_seq_len: Annotated[int, msgspec.Meta(ge=8, le=32768)] | None = None
    seed: Seed = 0
    quantize: Annotated[str, msgspec.Meta(pattern=r"^(auto|nf4|none)\Z")] = "auto"


class DatasetRef(msgspec.Struct, frozen=True):
    """JSONL with prompt/completion fields at `uri` (local path or s3://), or a built-in task.

    How large a dataset may be is the worker's to check when it reads it: bytes are not in the event.
    """

    uri: Uri | None = None
    task: TaskName | None = None
    prompt_field: FieldName = "prompt"
    completion_field: FieldName = "completion"


class TrainingRequest(msgspec.Struct, frozen=True, tag="train", tag_field="kind"):
    job_id: RequestId
    adapter_id: AdapterId
    dataset: DatasetRef
    base_model: BaseModelName | None = None  # None: the base the worker serves
    hyperparameters: Hyperparameters = Hyperparameters()
    overwrite: bool = False
    attempt: Attempt = 0
    schema_version: SchemaVersion = SCHEMA_VERSION


class JobState(str, enum.Enum):
    QUEUED = "queued"
    STARTED = "started"
    PROGRESS = "progress"
    CHECKPOINTED = "checkpointed"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TrainingEvent(msgspec.Struct, frozen=True, tag="training_event", tag_field="kind"):
    """One state change or progress report of a job; fields not relevant to `state` stay None.

    Floats are finite (JSON has no NaN or infinity); counts are bounded like answer attempts.
    """

    job_id: RequestId
    state: JobState
    ts_ms: EpochMs
    attempt: Count = 0
    step: Count | None = None
    total_steps: Count | None = None
    loss: float | None = None
    eval_loss: float | None = None
    learning_rate: float | None = None
    tokens_per_s: float | None = None
    eta_s: float | None = None
    quantization: Annotated[str, msgspec.Meta(pattern=r"^(nf4|none)\Z")] | None = None  # what the job used
    adapter_id: AdapterId | None = None
    adapter_uri: Uri | None = None
    checksum: Checksum | None = None
    metrics: Annotated[dict[MetricName, float], msgspec.Meta(max_length=MAX_METRICS)] = {}
    code: ErrorCode | None = None
    reason: Message | None = None
    notice: Message | None = None  # on `started`: the settings the worker chose or clamped, in words
    schema_version: SchemaVersion = SCHEMA_VERSION


class CancelJob(msgspec.Struct, frozen=True, tag="cancel_job", tag_field="kind"):
    job_id: RequestId
    schema_version: SchemaVersion = SCHEMA_VERSION
