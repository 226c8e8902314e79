"""What a training request becomes before it runs: validation of a TrainingRequest into a job
directory (`prepare_job`: the spec, and a copy of the dataset read within the configured roots and
caps), the typed refusals, and the count of a job's runs that bounds how often a redelivered
request is tried.

The job process reads only its own copy of the dataset, so a file swapped after the check is
never read. Blocking file IO: the worker calls `prepare_job` in a thread, off its event loop.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import msgspec

from consumers.training.config import TrainWorkerConfig
from consumers.training.release_gate import EvalSets, check_release, copy_test_file, eval_rows
from consumers.training.translation import job_spec, training_wire_code
from gpu_engine.training.adapter_store import AdapterStoreError, installed, is_taken
from gpu_engine.training.dataset import parse_rows
from gpu_engine.training.dataset_source import read_dataset, read_regular_file
from gpu_engine.training.errors import TrainingError
from gpu_engine.training.spec import TrainJobSpec
from schemas import DatasetRef, ErrorCode, LorastreamError, TrainingRequest
from schemas.limits import REQUEST_ID_PATTERN

_JOB_ID_RE = re.compile(REQUEST_ID_PATTERN)
DATASET_FILE = "dataset.jsonl"  # the job's own copy of its validated dataset, in its job directory
_RUNS_FILE = "runs"  # runs started, ever: a rerun's attempt number
_UNFINISHED_RUNS_FILE = "unfinished_runs"  # runs in a row that ended without any outcome


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
    num_rows: int = 0  # rows of its dataset
    notice: str | None = None  # the settings chosen for what the request left unset, in words


BuiltinTasks = Callable[[str, Path], Path]
"""Built-in task name, directory to write under -> that task's training JSONL; raises LookupError for
a name it does not know. The application supplies it (`land.builtin_train_file`); consumers never
import an application."""


def prepare_job(
    config: TrainWorkerConfig,
    request: TrainingRequest,
    builtin_tasks: BuiltinTasks | None = None,
    eval_sets: EvalSets | None = None,
) -> PreparedJob:
    """Validate a request, copy its dataset (and test file) and write its job spec (blocking file
    IO: run it in a thread).

    Counts a run of the job (`end_run` once it has an outcome); raises JobRefused. A dataset named
    by built-in task is refused unless `builtin_tasks` is given, an evaluation unless `eval_sets` is.
    """
    if request.base_model not in (None, config.base_name, config.base_model_path):
        raise JobRefused(f"unknown base model {request.base_model!r}; this worker trains {config.base_name!r}")
    if request.job_id in (".", ".."):
        raise JobRefused("job_id must not be '.' or '..'")
    job_dir = Path(config.work_dir) / request.job_id
    created = not job_dir.exists()
    job_dir.mkdir(parents=True, exist_ok=True)
    try:
        check_release(request, eval_sets)
    except ValueError as exc:
        raise JobRefused(str(exc)) from exc
    previous_runs = begin_run(job_dir, config.max_unfinished_runs)
    try:
        spec, num_rows, notice = _write_job(config, request, job_dir, builtin_tasks)
    except Exception:
        if created:  # nothing of this job is worth keeping
            shutil.rmtree(job_dir, ignore_errors=True)
        else:
            end_run(job_dir)
        raise
    return PreparedJob(job_dir, spec, request.attempt + previous_runs, num_rows, notice)


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


def _write_job(
    config: TrainWorkerConfig, request: TrainingRequest, job_dir: Path, builtin_tasks: BuiltinTasks | None
) -> tuple[TrainJobSpec, int, str | None]:
    """The job's spec (written to spec.json), its dataset's row count and the settings notice."""
    try:
        mine = installed(config.adapter_root, request.adapter_id)
        taken = is_taken(config.adapter_root, request.adapter_id)
    except AdapterStoreError as exc:
        raise JobRefused(str(exc)) from exc
    if taken and not request.overwrite and (mine is None or mine.job_id != request.job_id):
        raise JobRefused(f"adapter {request.adapter_id!r} already exists; set overwrite to replace it")
    try:
        spec, chosen = job_spec(
            config,
            request,
            output_dir=job_dir / "adapter",
            dataset_path=job_dir / DATASET_FILE,
            checkpoint_dir=job_dir / "checkpoints",
        )
    except ValueError as exc:
        raise JobRefused(f"invalid hyperparameters: {exc}") from exc
    data, num_rows = _dataset(config, request.dataset, builtin_tasks)
    (job_dir / DATASET_FILE).write_bytes(data)
    if request.evaluation is not None and request.evaluation.task is None:
        try:
            copy_test_file(config, request.evaluation, job_dir)
            eval_rows(request.evaluation, spec, job_dir)
        except TrainingError as exc:
            raise JobRefused(f"evaluation: {exc.code.value}: {exc}", training_wire_code(exc.code.value)) from exc
        except ValueError as exc:
            raise JobRefused(f"evaluation: {exc}") from exc
    spec.save(job_dir / "spec.json")
    return spec, num_rows, chosen.notice


def _dataset(
    config: TrainWorkerConfig, dataset: DatasetRef, builtin_tasks: BuiltinTasks | None
) -> tuple[bytes, int]:
    """The dataset's bytes, read within the worker's roots and caps, every row checked; its row count."""
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
            data = read_regular_file(_builtin_dataset(config, dataset.task, builtin_tasks), config.max_dataset_bytes)
        else:
            raise JobRefused("dataset needs a uri or a built-in task name")
        rows = parse_rows(
            data, dataset.prompt_field, dataset.completion_field, max_rows=config.max_dataset_rows, name=name
        )
    except TrainingError as exc:
        raise JobRefused(f"{exc.code.value}: {exc}", training_wire_code(exc.code.value)) from exc
    return data, len(rows)


def _builtin_dataset(config: TrainWorkerConfig, task: str, builtin_tasks: BuiltinTasks | None) -> Path:
    """The training JSONL of a built-in task, written once under the work dir."""
    if builtin_tasks is None:
        raise JobRefused(f"unknown built-in task {task!r}: this worker serves no built-in tasks")
    try:
        return builtin_tasks(task, Path(config.work_dir) / "tasks")
    except LookupError as exc:
        raise JobRefused(f"unknown built-in task {task!r}: {exc}") from exc


def salvage_job_id(data: bytes | None) -> str | None:
    """The job_id of a refused TrainingRequest, when the bytes are a JSON object with a valid one."""
    try:
        obj = msgspec.json.decode(data or b"")
    except (msgspec.DecodeError, ValueError):
        return None
    job_id = obj.get("job_id") if isinstance(obj, dict) else None
    return job_id if isinstance(job_id, str) and _JOB_ID_RE.match(job_id) else None
