"""What a task is: a completion-style prompt template, a metric, rows; and the errors of this package.

Modelled on LoRA Land's task metadata (arXiv 2405.00732, appendix): every task is a prompt
template whose last line is a cue (`### Label:`), a completion the model must write after it,
and one metric that turns (answer, gold) into a score in [0, 1].
"""

from __future__ import annotations

import enum
import re
import string
from dataclasses import dataclass

from schemas import LorastreamError

TASK_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"  # also the last part of the task's adapter id
MAX_NEW_TOKENS_LIMIT = 256
_NAME_RE = re.compile(TASK_NAME_PATTERN)


class LandError(LorastreamError):
    """Base of the errors of `land` (tasks, evaluation, the land run)."""


class TaskNotFound(LandError, LookupError):
    """A task name that is neither built in nor a task file."""


class TaskDataInvalid(LandError):
    """A task file or JSONL that cannot be read as a task."""


class Metric(str, enum.Enum):
    """How one answer is scored against its gold completion, in [0, 1]."""

    ACCURACY = "accuracy"
    """1 when the answer names the gold label (loose matching: case, punctuation, extra words)."""
    ROUGE_L = "rouge_l"
    """ROUGE-L F1 over lower-cased word tokens."""
    LAST_NUMBER = "last_number"
    """1 when the last number of the answer equals the last number of the gold completion."""
    CLOSENESS = "closeness"
    """1 - |predicted - gold| / (high - low) over the task's value range; 0 without a number."""


@dataclass(frozen=True)
class TaskSpec:
    """A task's metadata. `template` is a `str.format` template over a row's input fields.

    `labels` (accuracy tasks) is the closed label set; `value_range` (closeness tasks) the
    (low, high) the gold values live in; `max_new_tokens` bounds an answer during evaluation.
    `template` None means rows carry ready prompts (a user's JSONL of prompt/completion).
    """

    name: str
    metric: Metric
    template: str | None = None
    description: str = ""
    labels: tuple[str, ...] = ()
    value_range: tuple[float, float] | None = None
    max_new_tokens: int = 16
    modelled_on: str = ""  # the LoRA Land task this one imitates, if any

    def __post_init__(self) -> None:
        object.__setattr__(self, "metric", Metric(self.metric))
        object.__setattr__(self, "labels", tuple(self.labels))
        if not _NAME_RE.match(self.name):
            raise ValueError(f"task name {self.name!r} must match {TASK_NAME_PATTERN}")
        if self.template is not None:
            _check_template(self.template)
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
            raise ValueError(f"max_new_tokens must be within [1, {MAX_NEW_TOKENS_LIMIT}]")
        if self.metric is Metric.ACCURACY and len(set(self.labels)) < 2:
            raise ValueError("an accuracy task needs at least two distinct labels")
        if any(not label.strip() for label in self.labels):
            raise ValueError("labels must not be blank")
        if self.metric is Metric.CLOSENESS:
            if self.value_range is None or len(self.value_range) != 2:
                raise ValueError("a closeness task needs value_range=(low, high)")
            low, high = self.value_range
            if not low < high:
                raise ValueError("value_range must have low < high")
            object.__setattr__(self, "value_range", (float(low), float(high)))

    @property
    def input_fields(self) -> tuple[str, ...]:
        """The row fields the template reads."""
        if self.template is None:
            return ()
        return tuple(dict.fromkeys(f for _, f, _, _ in string.Formatter().parse(self.template) if f))

    def render(self, fields: dict[str, str]) -> str:
        """The prompt for one row's input fields (KeyError names a missing field)."""
        if self.template is None:
            return fields["prompt"]
        return self.template.format_map(fields)


@dataclass(frozen=True)
class TaskRow:
    """One example: the rendered prompt (ending in the cue) and the gold completion."""

    prompt: str
    completion: str


@dataclass(frozen=True)
class Task:
    """A spec with its fixed train and test rows."""

    spec: TaskSpec
    train: tuple[TaskRow, ...]
    test: tuple[TaskRow, ...]

    @property
    def name(self) -> str:
        return self.spec.name

    def __post_init__(self) -> None:
        if not self.test:
            raise ValueError(f"task {self.spec.name!r} has no test rows")


def _check_template(template: str) -> None:
    last_line = template.rsplit("\n", 1)[-1]
    if not last_line.endswith(":"):
        raise ValueError("a template must end in a cue line such as '### Label:'")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ValueError(f"template is not a valid format string: {exc}") from exc
    if not fields or any(not f.isidentifier() for f in fields):
        raise ValueError("a template names its input fields as {field} (identifiers)")
