"""The training side's exceptions; every error carries one code of a closed set.

`TrainErrorCode` is the job process's own contract: its value travels in a `JobEvent` from the job
subprocess to the worker, which maps it to the wire `ErrorCode` in one place (consumers/training).
"""

from __future__ import annotations

import enum

from lorastream.errors import LorastreamError


class TrainErrorCode(str, enum.Enum):
    """Why a training job could not run or finish. Closed: callers may switch on it."""

    INVALID_SPEC = "invalid_spec"  # hyperparameters or paths break a rule (see TrainJobSpec)
    DATASET_NOT_FOUND = "dataset_not_found"
    DATASET_INVALID = "dataset_invalid"  # rows that are not {prompt, completion} objects
    DATASET_REFUSED = "dataset_refused"  # outside the allowed roots, or not a regular file
    DATASET_TOO_LARGE = "dataset_too_large"  # more bytes or rows than the configured cap
    DATASET_UNAVAILABLE = "dataset_unavailable"  # the object store could not be reached
    BASE_NOT_FOUND = "base_not_found"
    BASE_UNSUPPORTED = "base_unsupported"  # a model_type not served, or final-logit soft-capping
    QUANTIZATION_UNAVAILABLE = "quantization_unavailable"  # nf4 asked for, bitsandbytes can't
    DIVERGED = "diverged"  # the loss became NaN or infinite
    CANCELLED = "cancelled"
    PREEMPTED = "preempted"  # stopped after a checkpoint so that a rerun resumes
    INTERNAL = "internal"


class TrainingError(LorastreamError):
    """Base of every error the training code raises on purpose."""

    code: TrainErrorCode = TrainErrorCode.INTERNAL


class InvalidSpecError(TrainingError):
    code = TrainErrorCode.INVALID_SPEC


class DatasetNotFoundError(TrainingError):
    code = TrainErrorCode.DATASET_NOT_FOUND


class DatasetRefusedError(TrainingError):
    """A dataset location this process may not read: outside the allowed roots, a symlink out of
    them, a device, FIFO or pseudo-file (/proc, /sys), or a file it lacks permission for."""

    code = TrainErrorCode.DATASET_REFUSED


class DatasetTooLargeError(TrainingError):
    code = TrainErrorCode.DATASET_TOO_LARGE


class DatasetUnavailableError(TrainingError):
    code = TrainErrorCode.DATASET_UNAVAILABLE


class DatasetInvalidError(TrainingError):
    """Malformed rows; `line_errors` holds (1-based line number, what is wrong) for each."""

    code = TrainErrorCode.DATASET_INVALID

    def __init__(self, message: str, line_errors: tuple[tuple[int, str], ...] = ()) -> None:
        super().__init__(message)
        self.line_errors = line_errors


class BaseNotFoundError(TrainingError):
    code = TrainErrorCode.BASE_NOT_FOUND


class BaseUnsupportedError(TrainingError):
    code = TrainErrorCode.BASE_UNSUPPORTED


class QuantizationUnavailableError(TrainingError):
    code = TrainErrorCode.QUANTIZATION_UNAVAILABLE


class DivergedError(TrainingError):
    code = TrainErrorCode.DIVERGED


class JobCancelled(TrainingError):
    """The job was asked to stop and give up (its checkpoints stay for inspection)."""

    code = TrainErrorCode.CANCELLED


class JobPreempted(TrainingError):
    """The job was asked to stop after checkpointing, so that a rerun resumes where it stopped."""

    code = TrainErrorCode.PREEMPTED

    def __init__(self, step: int) -> None:
        super().__init__(f"preempted after step {step} (checkpointed)")
        self.step = step
