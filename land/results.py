"""Scores of an evaluation, in points (0-100), and their JSON form.

{"title": "…", "tasks": {"sentiment": {"base": 12.0, "adapter": 97.0, "gain": 85.0, "metric": "accuracy",
 "examples": [{"prompt", "gold", "base", "adapter", "score"}, …], "misses": […], ...}},
 "mean_base": …, "mean_adapter": …, "mean_gain_points": …, "num_requests": …, "wall_s": …}

`examples` are the first test rows (at most MAX_EXAMPLES), `misses` the first rows the adapter did
not get fully right (at most MAX_MISSES); `score` is the adapter's, in points.
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass
from typing import Any

MAX_EXAMPLES = 3  # test rows kept per task, right or wrong
MAX_MISSES = 5  # wrong adapter answers kept per task
MAX_SAMPLE_CHARS = 300  # each text of a kept row is cut to this


@dataclass(frozen=True)
class Sample:
    """One test row: its prompt, the gold completion, both answers, the adapter's score (points)."""

    prompt: str
    gold: str
    base: str
    adapter: str
    score: float

    def __post_init__(self) -> None:
        for name in ("prompt", "gold", "base", "adapter"):
            text = getattr(self, name)
            if len(text) > MAX_SAMPLE_CHARS:
                object.__setattr__(self, name, text[: MAX_SAMPLE_CHARS - 1] + "…")


@dataclass(frozen=True)
class TaskResult:
    name: str
    metric: str
    adapter_id: str
    num_rows: int
    base: float  # mean score ×100 of the base model
    adapter: float  # mean score ×100 of the task's adapter
    num_failed_base: int = 0  # answers that never came (they scored 0)
    num_failed_adapter: int = 0
    example_prompt: str = ""
    example_gold: str = ""
    example_base: str = ""
    example_adapter: str = ""
    examples: tuple[Sample, ...] = ()
    misses: tuple[Sample, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "examples", tuple(self.examples)[:MAX_EXAMPLES])
        object.__setattr__(self, "misses", tuple(self.misses)[:MAX_MISSES])

    @property
    def gain(self) -> float:
        return self.adapter - self.base


@dataclass(frozen=True)
class EvalResult:
    tasks: tuple[TaskResult, ...]
    num_requests: int
    wall_s: float
    latency_ms_p50: float = 0.0
    title: str = "LoRA Land, in miniature"  # what was evaluated

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("an evaluation needs at least one task")

    @property
    def mean_base(self) -> float:
        return statistics.fmean(t.base for t in self.tasks)

    @property
    def mean_adapter(self) -> float:
        return statistics.fmean(t.adapter for t in self.tasks)

    @property
    def mean_gain_points(self) -> float:
        return statistics.fmean(t.gain for t in self.tasks)

    def to_json(self) -> dict[str, Any]:
        tasks = {}
        for task in self.tasks:
            body = dataclasses.asdict(task)
            body.pop("name")
            tasks[task.name] = {"base": task.base, "adapter": task.adapter, "gain": task.gain, **body}
        return {
            "title": self.title,
            "tasks": tasks,
            "mean_base": self.mean_base,
            "mean_adapter": self.mean_adapter,
            "mean_gain_points": self.mean_gain_points,
            "num_requests": self.num_requests,
            "wall_s": self.wall_s,
            "requests_per_s": self.num_requests / self.wall_s if self.wall_s > 0 else 0.0,
            "latency_ms_p50": self.latency_ms_p50,
        }

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> EvalResult:
        names = {f.name for f in dataclasses.fields(TaskResult)}
        tasks = []
        for name, fields in body["tasks"].items():
            kept = {k: v for k, v in fields.items() if k in names}
            for key in ("examples", "misses"):
                kept[key] = tuple(Sample(**sample) for sample in kept.get(key, ()))
            tasks.append(TaskResult(name=name, **kept))
        return cls(
            tuple(tasks),
            body["num_requests"],
            body["wall_s"],
            body.get("latency_ms_p50", 0.0),
            body.get("title", EvalResult.title),
        )
