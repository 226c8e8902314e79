"""What a training request becomes before it runs: the worker's config, validation of a
TrainingRequest into a job directory (`prepare_job`: the spec, and a copy of the dataset read
within the configured roots and caps), the typed refusals and their wire codes, and the count of
a job's runs that bounds how often a redelivered request is tried.

The job process reads only its own copy of the dataset, so a file swapped after the check is
never read. Blocking file IO: the worker calls `prepare_job` in a thread, off its event loop.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import msgspec

from gpu_engine.training.adapter_store import AdapterStoreError, installed, is_taken
from gpu_engine.training.dataset import MAX_DATASET_ROWS, parse_rows
from gpu_engine.training.dataset_source import (
    MAX_DATASET_BYTES,
    check_dataset_roots,
    read_dataset,
    read_regular_file,
)
from gpu_engine.training.errors import TrainErrorCode, TrainingError
from gpu_engine.training.spec import TrainJobSpec
from schemas import DatasetRef, ErrorCode, LorastreamError, TrainingRequest
from schemas.limits import REQUEST_ID_PATTERN

_JOB_ID_RE = re.compile(REQUEST_ID_PATTERN)
DATASET_FILE = "dataset.jsonl"  # the job's own copy of its validated dataset, in its job directory
_RUNS_FILE = "runs"  # runs started, ever: a rerun's attempt number
_UNFINISHED_RUNS_FILE = "unfinished_runs"  # runs in a row that ended without any outcome

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


@dataclass(frozen=True)
class TrainWorkerConfig:
    """What `lorastream train-worker` needs besides the Kafka connection.

    `base_model_name`: the name TrainingRequest.base_model uses for this worker's base
    (default: the base directory's name); None in a request also means this base.
    `dataset_roots`: where a request's dataset may come from: absolute directories and
    `s3://bucket/prefix/` prefixes. None by default: which of the worker's files tenants may
    train on (and so read back through the adapter) is for the operator to say; built-in tasks
    are always allowed. `max_unfinished_runs`: a job whose runs ended this many times in a row
    without any outcome (the worker died each time) fails instead of running again.
    """

    base_model_path: str
    adapter_root: str
    work_dir: str  # <work_dir>/<job_id>/: spec.json, dataset.jsonl, checkpoints/, adapter/, job.log
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
    dataset_roots: tuple[str, ...] = ()
    max_dataset_bytes: int = MAX_DATASET_BYTES
    max_dataset_rows: int = MAX_DATASET_ROWS
    max_unfinished_runs: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "dataset_roots", tuple(self.dataset_roots))
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
        check_dataset_roots(self.dataset_roots)
        if self.max_dataset_bytes < 1 or self.max_dataset_rows < 1:
            raise ValueError("max_dataset_bytes and max_dataset_rows must be >= 1")
        if self.max_unfinished_runs < 1:
            raise ValueError("max_unfinished_runs must be >= 1")

    @property
    def base_name(self) -> str:
        return self.base_model_name or Path(self.base_model_path).name


class AdapterPublishError(LorastreamError):
    """The trained adapter could not be uploaded to the publish uri."""


class JobRefused(LorastreamError):
    """A request that cannot become a job; it ends with a `failed` event carrying `code` and `reason`."""

    def __init__(self, reason: str, code: ErrorCode = ErrorCode.INVALID_REQUEST) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class PreparedJob:
    job_dir: Path
    spec: TrainJobSpec
    attempt: int


def prepare_job(config: TrainWorkerConfig, request: TrainingRequest) -> PreparedJob:
    """Validate a request, copy its dataset and write its job spec (blocking file IO: run it in a thread).

    Counts a run of the job (`end_run` once it has an outcome); raises JobRefused.
    """
    if request.base_model not in (None, config.base_name, config.base_model_path):
        raise JobRefused(f"unknown base model {request.base_model!r}; this worker trains {config.base_name!r}")
    if request.job_id in (".", ".."):
        raise JobRefused("job_id must not be '.' or '..'")
    job_dir = Path(config.work_dir) / request.job_id
    created = not job_dir.exists()
    job_dir.mkdir(parents=True, exist_ok=True)
    previous_runs = begin_run(job_dir, config.max_unfinished_runs)
    try:
        spec = _write_job(config, request, job_dir)
    except Exception:
        if created:  # nothing of this job is worth keeping
            shutil.rmtree(job_dir, ignore_errors=True)
        else:
            end_run(job_dir)
        raise
    return PreparedJob(job_dir, spec, request.attempt + previous_runs)


def begin_run(job_dir: Path, max_unfinished_runs: int) -> int:
    """Count a new run of the job in `job_dir`; returns how many runs it had before.

    Raises JobRefused (internal) when `max_unfinished_runs` runs in a row ended without an
    outcome: a request that kills the worker each time is not run again (a later request with
    the same job id starts a fresh count).
    """
    unfinished = _read_count(job_dir / _UNFINISHED_RUNS_FILE)
    if unfinished >= max_unfinished_runs:
        end_run(job_dir)
        raise JobRefused(
            f"gave up after {unfinished} runs in a row ended without an outcome (the worker stopped each time)",
            ErrorCode.INTERNAL,
        )
    previous_runs = _read_count(job_dir / _RUNS_FILE)
    (job_dir / _RUNS_FILE).write_text(str(previous_runs + 1))
    (job_dir / _UNFINISHED_RUNS_FILE).write_text(str(unfinished + 1))
    return previous_runs


def end_run(job_dir: Path) -> None:
    """The job's current run had an outcome: a terminal event, or a preemption after a checkpoint."""
    (job_dir / _UNFINISHED_RUNS_FILE).write_text("0")


def _read_count(path: Path) -> int:
    return int(path.read_text()) if path.is_file() else 0


def _write_job(config: TrainWorkerConfig, request: TrainingRequest, job_dir: Path) -> TrainJobSpec:
    try:
        mine = installed(config.adapter_root, request.adapter_id)
        taken = is_taken(config.adapter_root, request.adapter_id)
    except AdapterStoreError as exc:
        raise JobRefused(str(exc)) from exc
    if taken and not request.overwrite and (mine is None or mine.job_id != request.job_id):
        raise JobRefused(f"adapter {request.adapter_id!r} already exists; set overwrite to replace it")
    hyperparameters = msgspec.structs.asdict(request.hyperparameters)  # same names as TrainJobSpec's fields
    try:
        spec = TrainJobSpec(
            base_model_path=config.base_model_path,
            output_dir=str(job_dir / "adapter"),
            dataset_path=str(job_dir / DATASET_FILE),
            prompt_field=request.dataset.prompt_field,
            completion_field=request.dataset.completion_field,
            device=config.device,
            checkpoint_dir=str(job_dir / "checkpoints"),
            checkpoint_every_steps=config.checkpoint_every_steps,
            progress_interval_s=config.progress_interval_s,
            max_dataset_bytes=config.max_dataset_bytes,
            max_dataset_rows=config.max_dataset_rows,
            **hyperparameters,
        )
    except ValueError as exc:
        raise JobRefused(f"invalid hyperparameters: {exc}") from exc
    (job_dir / DATASET_FILE).write_bytes(_dataset(config, request.dataset))
    spec.save(job_dir / "spec.json")
    return spec


def _dataset(config: TrainWorkerConfig, dataset: DatasetRef) -> bytes:
    """The dataset's bytes, read within the worker's roots and caps, every row checked."""
    try:
        if dataset.uri is not None:
            name = PurePosixPath(dataset.uri).name
            data = read_dataset(
                dataset.uri,
                config.dataset_roots,
                max_bytes=config.max_dataset_bytes,
                s3_endpoint_url=config.s3_endpoint_url,
            )
        elif dataset.task is not None:
            name = dataset.task
            data = read_regular_file(_builtin_dataset(config, dataset.task), config.max_dataset_bytes)
        else:
            raise JobRefused("dataset needs a uri or a built-in task name")
        parse_rows(
            data, dataset.prompt_field, dataset.completion_field, max_rows=config.max_dataset_rows, name=name
        )
    except TrainingError as exc:
        raise JobRefused(f"{exc.code.value}: {exc}", training_wire_code(exc.code.value)) from exc
    return data


def _builtin_dataset(config: TrainWorkerConfig, task: str) -> Path:
    """The training JSONL of a built-in task (land), written once under the work dir."""
    from land import TaskNotFound, builtin_train_file

    try:
        return builtin_train_file(task, Path(config.work_dir) / "tasks")
    except TaskNotFound as exc:
        raise JobRefused(f"unknown built-in task {task!r}: {exc}") from exc


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
