"""What a training request becomes before it runs: the worker's config, validation of a
TrainingRequest into a job spec on disk (`prepare_job`), and the typed refusals.

Blocking file IO (dataset rows, the adapter root, the job directory): the worker calls
`prepare_job` in a thread, off its event loop.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec

from gpu_engine.training import (
    DatasetInvalidError,
    DatasetNotFoundError,
    TrainJobSpec,
    load_rows,
)
from gpu_engine.training.adapter_store import AdapterStoreError, installed, is_taken
from schemas import ErrorCode, LorastreamError, TrainingRequest
from schemas.limits import REQUEST_ID_PATTERN

_JOB_ID_RE = re.compile(REQUEST_ID_PATTERN)


@dataclass(frozen=True)
class TrainWorkerConfig:
    """What `lorastream train-worker` needs besides the Kafka connection.

    `base_model_name`: the name TrainingRequest.base_model uses for this worker's base
    (default: the base directory's name); None in a request also means this base.
    """

    base_model_path: str
    adapter_root: str
    work_dir: str  # <work_dir>/<job_id>/: spec.json, checkpoints/, adapter/, job.log
    base_model_name: str | None = None
    group_id: str = "lorastream-training"
    device: str = "auto"
    job_threads: int | None = None  # torch threads of a job process (None: one per core)
    checkpoint_every_steps: int = 50
    progress_interval_s: float = 2.0
    stop_grace_s: float = 60.0  # a cancelled/preempted job gets this long before it is killed
    training_partitions: int = 2  # used when the worker creates the topics
    publish_uri: str | None = None  # s3://bucket/prefix: adapters are also uploaded there and announced by that uri
    s3_endpoint_url: str | None = None

    def __post_init__(self) -> None:
        for name in ("base_model_path", "adapter_root", "work_dir", "group_id"):
            if not getattr(self, name):
                raise ValueError(f"{name} must not be empty")
        if self.job_threads is not None and self.job_threads < 1:
            raise ValueError("job_threads must be >= 1")
        if self.checkpoint_every_steps < 1:
            raise ValueError("checkpoint_every_steps must be >= 1")
        if self.progress_interval_s < 0 or self.stop_grace_s < 0:
            raise ValueError("progress_interval_s and stop_grace_s must be >= 0")
        if self.training_partitions < 1:
            raise ValueError("training_partitions must be >= 1")
        if self.publish_uri is not None and not self.publish_uri.startswith("s3://"):
            raise ValueError("publish_uri must be an s3://bucket/prefix uri")

    @property
    def base_name(self) -> str:
        return self.base_model_name or Path(self.base_model_path).name


class AdapterPublishError(LorastreamError):
    """The trained adapter could not be uploaded to the publish uri."""


class JobRefused(LorastreamError):
    """A request that cannot become a job; it ends with a `failed` event (invalid_request) and `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.code = ErrorCode.INVALID_REQUEST
        self.reason = reason


@dataclass(frozen=True)
class PreparedJob:
    job_dir: Path
    spec: TrainJobSpec
    attempt: int


def _builtin_dataset(config: TrainWorkerConfig, task: str) -> Path:
    """The training JSONL of a built-in task (consumers.land), written once under the work dir."""
    from consumers.land import TaskNotFound, builtin_train_file

    try:
        return builtin_train_file(task, Path(config.work_dir) / "tasks")
    except TaskNotFound as exc:
        raise JobRefused(f"unknown built-in task {task!r}: {exc}") from exc


def prepare_job(config: TrainWorkerConfig, request: TrainingRequest) -> PreparedJob:
    """Validate a request and write its job spec (blocking file IO: run it in a thread)."""
    if request.base_model not in (None, config.base_name, config.base_model_path):
        raise JobRefused(f"unknown base model {request.base_model!r}; this worker trains {config.base_name!r}")
    dataset = request.dataset
    if dataset.uri is not None:
        if "://" in dataset.uri and not dataset.uri.startswith("file://"):
            raise JobRefused(f"dataset {dataset.uri}: only local paths and file:// URIs are supported")
        dataset_path = dataset.uri.removeprefix("file://")
    elif dataset.task is not None:
        dataset_path = str(_builtin_dataset(config, dataset.task))
    else:
        raise JobRefused("dataset needs a uri or a built-in task name")
    try:
        load_rows(dataset_path, dataset.prompt_field, dataset.completion_field)
    except (DatasetNotFoundError, DatasetInvalidError) as exc:
        raise JobRefused(f"{exc.code.value}: {exc}") from exc
    if request.job_id in (".", ".."):
        raise JobRefused("job_id must not be '.' or '..'")
    try:
        mine = installed(config.adapter_root, request.adapter_id)
        taken = is_taken(config.adapter_root, request.adapter_id)
    except AdapterStoreError as exc:
        raise JobRefused(str(exc)) from exc
    if taken and not request.overwrite and (mine is None or mine.job_id != request.job_id):
        raise JobRefused(f"adapter {request.adapter_id!r} already exists; set overwrite to replace it")
    job_dir = Path(config.work_dir) / request.job_id
    hyperparameters = msgspec.structs.asdict(request.hyperparameters)  # same names as TrainJobSpec's fields
    try:
        spec = TrainJobSpec(
            base_model_path=config.base_model_path,
            output_dir=str(job_dir / "adapter"),
            dataset_path=dataset_path,
            prompt_field=dataset.prompt_field,
            completion_field=dataset.completion_field,
            device=config.device,
            checkpoint_dir=str(job_dir / "checkpoints"),
            checkpoint_every_steps=config.checkpoint_every_steps,
            progress_interval_s=config.progress_interval_s,
            **hyperparameters,
        )
    except ValueError as exc:
        raise JobRefused(f"invalid hyperparameters: {exc}") from exc
    job_dir.mkdir(parents=True, exist_ok=True)
    spec.save(job_dir / "spec.json")
    runs_file = job_dir / "runs"
    previous_runs = int(runs_file.read_text()) if runs_file.is_file() else 0
    runs_file.write_text(str(previous_runs + 1))
    return PreparedJob(job_dir, spec, request.attempt + previous_runs)


def salvage_job_id(data: bytes | None) -> str | None:
    """The job_id of a refused TrainingRequest, when the bytes are a JSON object with a valid one."""
    try:
        obj = msgspec.json.decode(data or b"")
    except (msgspec.DecodeError, ValueError):
        return None
    job_id = obj.get("job_id") if isinstance(obj, dict) else None
    return job_id if isinstance(job_id, str) and _JOB_ID_RE.match(job_id) else None


def now_ms() -> int:
    return time.time_ns() // 1_000_000
