"""LoRA Land in miniature: tasks, metrics, `lorastream eval` and `lorastream land` (see docs/land.md).

Importing this package is light (no torch, no Kafka client): task specs, the built-in synthetic
tasks, metrics, `builtin_train_file` (which the training worker uses to turn a `DatasetRef.task`
name into a JSONL file), and `cached_base`, the pretrained base built once per `BaseModelConfig`
(torch is imported only when it has to be built).
"""

from land.base_model import BaseModelConfig, cached_base
from land.metrics import (
    answer_text,
    closeness,
    last_number_match,
    match_label,
    rouge_l_f,
    score,
)
from land.spec import (
    LandError,
    Metric,
    Task,
    TaskDataInvalid,
    TaskNotFound,
    TaskRow,
    TaskSpec,
)
from land.tasks import (
    BUILTIN_TASKS,
    TaskFiles,
    builtin_task,
    builtin_train_file,
    load_task,
    materialize_task,
)

__all__ = [
    "BUILTIN_TASKS",
    "BaseModelConfig",
    "LandError",
    "Metric",
    "Task",
    "TaskDataInvalid",
    "TaskFiles",
    "TaskNotFound",
    "TaskRow",
    "TaskSpec",
    "answer_text",
    "builtin_task",
    "builtin_train_file",
    "cached_base",
    "closeness",
    "last_number_match",
    "load_task",
    "match_label",
    "materialize_task",
    "rouge_l_f",
    "score",
]
