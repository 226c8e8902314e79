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

MAX_EVAL_EXAMPLES = 1000  # rows one release evaluation decodes, per model scored
MAX_EVAL_NEW_TOKENS = 256
MAX_MARGIN_POINTS = 100.0  # scores are points in [0, 100]
EvalScore = Annotated[float, msgspec.Meta(ge=0.0, le=100.0)]
MarginPoints = Annotated[float, msgspec.Meta(ge=-MAX_MARGIN_POINTS, le=MAX_MARGIN_POINTS)]

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


class ReleaseRule(str, enum.Enum):
    """When a finished job's adapter is announced (served) rather than only kept in the store."""

    ALWAYS = "always"  # announced whatever it scores (no evaluation needed): the default
    BEAT_BASE = "beat_base"  # its score exceeds the base's by more than `margin_points`
    BEAT_SERVED = "beat_served"  # ... exceeds the announced version's (the base's when none is)


class EvalMetric(str, enum.Enum):
    """How a held-out answer is scored (a task names its own metric); LoRA Land's metrics."""

    ACCURACY = "accuracy"  # the completions' distinct values are the labels
    ROUGE_L = "rouge_l"
    LAST_NUMBER = "last_number"


class Evaluation(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a candidate is scored on: exactly one of a built-in task (`task`, scored with its own
    metric), a test file (`test_uri`: JSONL rows with the dataset's prompt/completion fields, read
    within the worker's dataset roots) or the job's own held-out split (`held_out`); these two are
    scored with `metric`. At most `max_examples` rows; answers are greedy and `max_new_tokens` long
    at most (None: the task's own bound, else 32)."""

    task: TaskName | None = None
    test_uri: Uri | None = None
    held_out: bool = False
    metric: EvalMetric = EvalMetric.ROUGE_L
    max_examples: Annotated[int, msgspec.Meta(ge=1, le=MAX_EVAL_EXAMPLES)] = 100
    max_new_tokens: Annotated[int, msgspec.Meta(ge=1, le=MAX_EVAL_NEW_TOKENS)] | None = None


class Release(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The release rule; `margin_points` is the N of "beat by N points" (scores are 0-100)."""

    rule: ReleaseRule = ReleaseRule.ALWAYS
    margin_points: MarginPoints = 0.0


class ReleaseDecision(str, enum.Enum):
    RELEASED = "released"  # announced on the adapters topic
    KEPT = "kept"  # installed beside the other versions, not announced (`lorastream promote` can)


class ReleaseScores(msgspec.Struct, frozen=True):
    """A candidate's evaluation and what the rule made of it; scores are points in [0, 100]."""

    decision: ReleaseDecision
    rule: ReleaseRule
    margin_points: MarginPoints = 0.0
    task: TaskName | None = None  # the task's name; "held_out" for the job's own split
    metric: MetricName | None = None
    num_examples: Count = 0
    candidate: EvalScore | None = None
    base: EvalScore | None = None
    served: EvalScore | None = None  # beat_served: the announced version's score
    served_version: Count | None = None
    reason: Message | None = None  # the decision in words


class TrainingRequest(msgspec.Struct, frozen=True, tag="train", tag_field="kind"):
    job_id: RequestId
    adapter_id: AdapterId
    dataset: DatasetRef
    base_model: BaseModelName | None = None  # None: the base the worker serves
    hyperparameters: Hyperparameters = Hyperparameters()
    overwrite: bool = False
    attempt: Attempt = 0
    evaluation: Evaluation | None = None  # needed by every rule but `always`
    release: Release = Release()
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
    adapter_version: Count | None = None  # on `completed`: the version installed
    release: ReleaseScores | None = None  # on `completed`: the evaluation and the decision
    schema_version: SchemaVersion = SCHEMA_VERSION


class CancelJob(msgspec.Struct, frozen=True, tag="cancel_job", tag_field="kind"):
    job_id: RequestId
    schema_version: SchemaVersion = SCHEMA_VERSION
