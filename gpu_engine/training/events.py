"""What a job reports (JobEvent, one JSON object per line across the process boundary) and how
it is told to stop (StopSignal). No torch."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import threading
from dataclasses import dataclass, field
from typing import Any


class JobEventKind(str, enum.Enum):
    STARTED = "started"  # model loaded, data tokenized; says the quantization used
    PROGRESS = "progress"
    CHECKPOINTED = "checkpointed"
    COMPLETED = "completed"  # terminal: adapter_dir and checksum set
    FAILED = "failed"  # terminal: code and reason set
    CANCELLED = "cancelled"  # terminal
    PREEMPTED = "preempted"  # terminal for this process: checkpointed, a rerun resumes


TERMINAL_KINDS = frozenset(
    {JobEventKind.COMPLETED, JobEventKind.FAILED, JobEventKind.CANCELLED, JobEventKind.PREEMPTED}
)


@dataclass(frozen=True)
class JobEvent:
    """One report of a job; fields that do not apply to `kind` stay None."""

    kind: JobEventKind
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    eval_loss: float | None = None
    learning_rate: float | None = None
    tokens_per_s: float | None = None
    eta_s: float | None = None
    quantization: str | None = None  # "nf4" or "none"
    device: str | None = None
    resumed_from_step: int | None = None
    checkpoint_dir: str | None = None
    adapter_dir: str | None = None
    checksum: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    code: str | None = None  # a TrainErrorCode value
    reason: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.kind in TERMINAL_KINDS

    def to_line(self) -> str:
        """One JSON object, no newline inside; None (and NaN/inf) fields left out."""
        fields = {k: _finite(v) for k, v in dataclasses.asdict(self).items()}
        body = {k: v for k, v in fields.items() if v is not None and v != {}}
        body["kind"] = self.kind.value
        return json.dumps(body, separators=(",", ":"), allow_nan=False)


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such floats are left out."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: v for k, v in ((k, _finite(v)) for k, v in value.items()) if v is not None}
    return value


def parse_job_event(line: str | bytes) -> JobEvent:
    """Raises ValueError when the line is not a JobEvent."""
    try:
        body: Any = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a JSON job event: {exc}") from exc
    if not isinstance(body, dict):
        raise ValueError("a job event must be a JSON object")
    try:
        body["kind"] = JobEventKind(body.get("kind"))
        return JobEvent(**body)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not a job event: {exc}") from exc


class StopSignal:
    """Set from another thread or a signal handler; the training loop polls it between micro-batches."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requested: str | None = None

    def cancel(self) -> None:
        with self._lock:
            self._requested = "cancel"

    def preempt(self) -> None:
        """Checkpoint, then stop; a cancel already requested stays a cancel."""
        with self._lock:
            if self._requested is None:
                self._requested = "preempt"

    @property
    def requested(self) -> str | None:
        """None, "cancel" or "preempt"."""
        return self._requested
