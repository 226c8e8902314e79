"""LoRA fine-tuning: a TrainJobSpec in, a PEFT-format adapter (plus its sha256) out.

Importing this package does not import torch: the spec, dataset validation, job events and the
job-process handle are light, so a Kafka consumer can use them. The loop itself is
`gpu_engine.training.trainer.run_training`; `python -m gpu_engine.training.run_job SPEC.json`
runs one job in its own process (see docs/training.md).
"""

from gpu_engine.adapter_files import ADAPTER_FILES, adapter_checksum, is_adapter_dir
from gpu_engine.training.dataset import Row, load_rows, split_rows
from gpu_engine.training.errors import (
    BaseNotFoundError,
    BaseUnsupportedError,
    DatasetInvalidError,
    DatasetNotFoundError,
    DivergedError,
    InvalidSpecError,
    JobCancelled,
    JobPreempted,
    QuantizationUnavailableError,
    TrainErrorCode,
    TrainingError,
)
from gpu_engine.training.events import TERMINAL_KINDS, JobEvent, JobEventKind, StopSignal, parse_job_event
from gpu_engine.training.spec import LORA_TARGETS, TrainJobSpec

__all__ = [
    "ADAPTER_FILES",
    "LORA_TARGETS",
    "TERMINAL_KINDS",
    "BaseNotFoundError",
    "BaseUnsupportedError",
    "DatasetInvalidError",
    "DatasetNotFoundError",
    "DivergedError",
    "InvalidSpecError",
    "JobCancelled",
    "JobEvent",
    "JobEventKind",
    "JobPreempted",
    "QuantizationUnavailableError",
    "Row",
    "StopSignal",
    "TrainErrorCode",
    "TrainJobSpec",
    "TrainingError",
    "adapter_checksum",
    "is_adapter_dir",
    "load_rows",
    "parse_job_event",
    "split_rows",
]
