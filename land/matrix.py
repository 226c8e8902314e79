"""The land's matrix: every base × task (base score, fine-tuned score, gain), the few-shot column,
and their JSON form (docs/bench/land.json).

{"bases": {"llama": {"mean_gain_points": …, "mean_base": …, "mean_adapter": …,
                     "tasks": {"sentiment": {"base": …, "adapter": …, "gain": …, …}}, …}, …},
 "fewshot": {"base": "llama-large", "tasks": {"sentiment": {"score": …, "shots": 4, "beaten_by": ["llama"]}},
             "mean": …, "beaten_on": {"llama": 5, "qwen2": 6}, "beaten_by_every_base_on": 5},
 "tasks": ["sentiment", …], "num_requests": …, "wall_s": …, "requests_per_s": …}

Scores are in points (0-100). A base's adapters beat the few-shot base on a task when the adapter's
score is strictly higher.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from land.fewshot import FewShotScore
from land.results import EvalResult


@dataclass(frozen=True)
class FewShotColumn:
    """The few-shot base's name (in the report) and its score per task."""

    base: str
    scores: tuple[FewShotScore, ...]

    def score(self, task: str) -> float:
        return next(s.score for s in self.scores if s.task == task)

    @property
    def mean(self) -> float:
        return statistics.fmean(s.score for s in self.scores)


@dataclass(frozen=True)
class MatrixResult:
    """Per base (by report name, in run order) its evaluation; the few-shot column, if any."""

    bases: dict[str, EvalResult]
    fewshot: FewShotColumn | None
    num_requests: int
    wall_s: float

    def __post_init__(self) -> None:
        if not self.bases:
            raise ValueError("a matrix needs at least one base")
        task_sets = {tuple(t.name for t in result.tasks) for result in self.bases.values()}
        if len(task_sets) != 1:
            raise ValueError("every base must be evaluated on the same tasks")
        if self.fewshot is not None and {s.task for s in self.fewshot.scores} != set(self.task_names):
            raise ValueError("the few-shot column must score the bases' tasks")

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in next(iter(self.bases.values())).tasks)

    def beats_fewshot(self, base: str) -> tuple[str, ...]:
        """The tasks on which `base`'s adapter scores strictly higher than the few-shot base."""
        if self.fewshot is None:
            return ()
        return tuple(t.name for t in self.bases[base].tasks if t.adapter > self.fewshot.score(t.name))

    def beaten_by_every_base(self) -> tuple[str, ...]:
        """The tasks on which every base's adapter beats the few-shot base."""
        won = [set(self.beats_fewshot(name)) for name in self.bases]
        return tuple(task for task in self.task_names if all(task in tasks for tasks in won))

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "bases": {name: result.to_json() for name, result in self.bases.items()},
            "tasks": list(self.task_names),
            "num_requests": self.num_requests,
            "wall_s": self.wall_s,
            "requests_per_s": self.num_requests / self.wall_s if self.wall_s > 0 else 0.0,
        }
        for entry in body["bases"].values():
            for key in ("title", "num_requests", "wall_s", "requests_per_s"):
                entry.pop(key)  # of the whole run: at the top
        if self.fewshot is not None:
            body["fewshot"] = {
                "base": self.fewshot.base,
                "tasks": {
                    s.task: {
                        "score": s.score,
                        "shots": s.shots,
                        "num_rows": s.num_rows,
                        "num_failed": s.num_failed,
                        "example": s.example,
                        "beaten_by": [name for name in self.bases if s.task in self.beats_fewshot(name)],
                    }
                    for s in self.fewshot.scores
                },
                "mean": self.fewshot.mean,
                "beaten_on": {name: len(self.beats_fewshot(name)) for name in self.bases},
                "beaten_by_every_base_on": len(self.beaten_by_every_base()),
            }
        return body
