"""The one place where the training wire contract (schemas) meets the training engine.

Engine → wire: a job's `JobEvent` becomes a `TrainingEvent` (`training_event`, `relayed_event`)
and a `TrainErrorCode` becomes an `ErrorCode` (`training_wire_code`). Wire → engine: a
`TrainingRequest`'s hyperparameters become a `TrainJobSpec` (`job_spec`), the ones it leaves
unset chosen from the base's size (`gpu_engine.training.defaults`). The engine keeps its
own dataclasses and never imports schemas; nothing else in the worker copies fields between them.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import msgspec

from consumers.training.config import TrainWorkerConfig
from gpu_engine.training.defaults import ChosenSettings, choose_settings, read_base_shape
from gpu_engine.training.errors import TrainErrorCode
from gpu_engine.training.events import JobEvent, JobEventKind
from gpu_engine.training.spec import TrainJobSpec
from schemas import ErrorCode, JobState, TrainingEvent, TrainingRequest

MAX_REASON_CHARS = 1000

# JobEvent fields a TrainingEvent carries under the same name and meaning
SAME_NAMED_FIELDS = (
    "step",
    "total_steps",
    "loss",
    "eval_loss",
    "learning_rate",
    "tokens_per_s",
    "eta_s",
    "quantization",
    "metrics",
)
# JobEvent fields translated rather than copied: kind → state, a TrainErrorCode → an ErrorCode
TRANSLATED_FIELDS = ("kind", "code", "reason")
# JobEvent fields for the worker only: where files are, and what the wire learns otherwise
# (its checksum is the installed adapter's, read back from the adapter store)
ENGINE_ONLY_FIELDS = ("device", "resumed_from_step", "checkpoint_dir", "adapter_dir", "checksum")

# every TrainErrorCode → the wire code of the `failed` event it ends a job with
_TRAIN_WIRE_CODES = {
    TrainErrorCode.INVALID_SPEC: ErrorCode.INVALID_REQUEST,
    TrainErrorCode.DATASET_NOT_FOUND: ErrorCode.INVALID_REQUEST,
    TrainErrorCode.DATASET_INVALID: ErrorCode.INVALID_REQUEST,
    TrainErrorCode.DATASET_REFUSED: ErrorCode.DATASET_REFUSED,
    TrainErrorCode.DATASET_TOO_LARGE: ErrorCode.DATASET_REFUSED,
    TrainErrorCode.DATASET_UNAVAILABLE: ErrorCode.INTERNAL,
    TrainErrorCode.BASE_NOT_FOUND: ErrorCode.INVALID_REQUEST,
    TrainErrorCode.BASE_UNSUPPORTED: ErrorCode.INVALID_REQUEST,
    TrainErrorCode.QUANTIZATION_UNAVAILABLE: ErrorCode.INVALID_REQUEST,
    TrainErrorCode.DIVERGED: ErrorCode.INVALID_REQUEST,
    TrainErrorCode.CANCELLED: ErrorCode.CANCELLED,
    TrainErrorCode.PREEMPTED: ErrorCode.INTERNAL,
    TrainErrorCode.INTERNAL: ErrorCode.INTERNAL,
}


def training_wire_code(code: str | None) -> ErrorCode:
    """The wire code for a job failure's TrainErrorCode value; an unknown or absent one is internal."""
    try:
        return _TRAIN_WIRE_CODES[TrainErrorCode(code)]
    except ValueError:
        return ErrorCode.INTERNAL


def training_event(
    job_id: str,
    state: JobState,
    *,
    attempt: int,
    job_event: JobEvent | None = None,
    code: ErrorCode | None = None,
    reason: str | None = None,
    adapter_id: str | None = None,
    adapter_uri: str | None = None,
    checksum: str | None = None,
) -> TrainingEvent:
    """A TrainingEvent stamped now, carrying `job_event`'s measurements (finite ones only)."""
    carried = {}
    if job_event is not None:
        carried = {name: _finite(getattr(job_event, name)) for name in SAME_NAMED_FIELDS}
    given = dict(
        code=code,
        reason=None if reason is None else bounded(reason),
        adapter_id=adapter_id,
        adapter_uri=adapter_uri,
        checksum=checksum,
    )
    present = {k: v for k, v in {**carried, **given}.items() if v is not None and v != {}}
    return TrainingEvent(job_id=job_id, state=state, ts_ms=now_ms(), attempt=attempt, **present)


def relayed_event(job_event: JobEvent, *, job_id: str, attempt: int, cancel_requested: bool) -> TrainingEvent:
    """What a running job's report (anything but COMPLETED and PREEMPTED) says on the wire.

    A job killed after its cancellation's grace period reports FAILED: on the wire it was
    cancelled. Only terminal events carry a code and a reason.
    """
    if job_event.kind in (JobEventKind.COMPLETED, JobEventKind.PREEMPTED):
        raise ValueError(f"a {job_event.kind.value} job event is not relayed as it is")
    if job_event.kind is JobEventKind.FAILED and cancel_requested:
        state, code, reason = JobState.CANCELLED, ErrorCode.CANCELLED, job_event.reason
    elif job_event.kind is JobEventKind.FAILED:
        state, code = JobState.FAILED, training_wire_code(job_event.code)
        reason = f"{job_event.code}: {job_event.reason}"
    else:
        state = JobState(job_event.kind.value)
        code = ErrorCode.CANCELLED if state is JobState.CANCELLED else None
        reason = job_event.reason if state is JobState.CANCELLED else None
    return training_event(job_id, state, attempt=attempt, job_event=job_event, code=code, reason=reason)


def job_spec(
    config: TrainWorkerConfig, request: TrainingRequest, *, output_dir: Path, dataset_path: Path, checkpoint_dir: Path
) -> tuple[TrainJobSpec, ChosenSettings]:
    """The engine's spec of a request's job, and the settings chosen for what the request left unset
    (their `notice` says which, in words); raises ValueError for hyperparameters it refuses."""
    hyperparameters = msgspec.structs.asdict(request.hyperparameters)  # same names as TrainJobSpec's fields
    chosen = choose_settings(read_base_shape(config.base_model_path), hyperparameters)
    hyperparameters.update(chosen.values)
    spec = TrainJobSpec(
        base_model_path=config.base_model_path,
        output_dir=str(output_dir),
        dataset_path=str(dataset_path),
        prompt_field=request.dataset.prompt_field,
        completion_field=request.dataset.completion_field,
        device=config.device,
        checkpoint_dir=str(checkpoint_dir),
        checkpoint_every_steps=config.checkpoint_every_steps,
        progress_interval_s=config.progress_interval_s,
        max_dataset_bytes=config.max_dataset_bytes,
        max_dataset_rows=config.max_dataset_rows,
        **hyperparameters,
    )
    return spec, chosen


def bounded(reason: str) -> str:
    """A reason short enough for the wire's Message limit."""
    return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 1] + "…"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _finite(value):
    """The wire has no NaN or infinity: such floats (and metrics) are left out."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if not (isinstance(v, float) and not math.isfinite(v))}
    return value

