"""The few-shot column: a larger base served without adapters, prompted with k solved training rows.

LoRA Land compared its small fine-tunes with GPT-4 prompted with the task's instruction; the land's
stand-in for the large general model is a bigger base of its own (`land.bases.FEWSHOT_BASE`), and
since that base was never taught to follow instructions, it is shown the task instead: k rows of
the training split (drawn per test row, seeded), each its prompt and gold completion, then the test
prompt. k is chosen per task as the most shots (at most `max_shots`) with which every test row's
prompt and the answer fit in the context the base was pretrained on.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from land.evaluate import BASE, Answer, EvalConfig, EvalItem
from land.metrics import score
from land.spec import LandError, Task

SHOT_SEPARATOR = "\n\n"
DEFAULT_MAX_SHOTS = 4

TokenCount = Callable[[str], int]  # the number of tokens the served base reads for a text


def shots_that_fit(
    task: Task, count_tokens: TokenCount, max_tokens: int, max_shots: int, num_rows: int | None = None, seed: int = 0
) -> int:
    """The largest k <= `max_shots` whose few-shot prompt (`few_shot_prompt`, drawn as it will be) of
    each of the first `num_rows` test rows (None: all), plus the task's longest answer, fits in
    `max_tokens` tokens. Raises LandError when not even a test prompt alone does."""
    if max_shots < 0:
        raise ValueError("max_shots must be >= 0")
    rows = range(len(task.test[:num_rows]))
    for shots in range(min(max_shots, len(task.train)), -1, -1):
        longest = max(count_tokens(few_shot_prompt(task, row, shots, seed)) for row in rows)
        if longest + task.spec.max_new_tokens <= max_tokens:
            return shots
    raise LandError(f"task {task.name}: a test prompt and its answer do not fit in {max_tokens} tokens")


def few_shot_prompt(task: Task, row: int, shots: int, seed: int = 0) -> str:
    """k = `shots` training rows (drawn per test row, seeded), solved, then test row `row`'s prompt."""
    if not 0 <= shots <= len(task.train):
        raise ValueError(f"task {task.name}: {shots} shots from {len(task.train)} training rows")
    drawn = random.Random(f"{seed}:{task.name}:{row}").sample(task.train, shots)
    examples = [example.prompt + example.completion for example in drawn]
    return SHOT_SEPARATOR.join([*examples, task.test[row].prompt])


@dataclass(frozen=True)
class FewShotPlan:
    """The few-shot base's lane (its base name on the wire) and the shots per task."""

    base: str
    shots: dict[str, int]


def plan_fewshot_requests(tasks: Sequence[Task], plan: FewShotPlan, config: EvalConfig) -> list[EvalItem]:
    """One request per test row of every task to the few-shot base (no adapter), not shuffled."""
    items = []
    for task in tasks:
        shots = plan.shots[task.name]
        for i, row in enumerate(task.test[: config.max_test_rows]):
            prompt = few_shot_prompt(task, i, shots, config.shuffle_seed)
            items.append(EvalItem(task.name, BASE, i, prompt, row.completion, None, task.spec.max_new_tokens, plan.base))
    return items


@dataclass(frozen=True)
class FewShotScore:
    """A task's few-shot score in points (0-100), its shots and the answers that never came."""

    task: str
    shots: int
    score: float
    num_rows: int
    num_failed: int = 0
    example: str = ""  # the answer to the first test row


def score_fewshot(tasks: Sequence[Task], answers: Sequence[Answer], plan: FewShotPlan) -> list[FewShotScore]:
    """Mean points per task over the answers of the few-shot base (failed answers score 0)."""
    results = []
    for task in tasks:
        mine = [a for a in answers if a.item.base == plan.base and a.item.task == task.name]
        if not mine:
            raise ValueError(f"task {task.name}: no few-shot answers to score")
        points = [100.0 * score(task.spec, a.text, a.item.gold) for a in mine]
        first = next((a for a in mine if a.item.row == 0), None)
        results.append(
            FewShotScore(
                task=task.name,
                shots=plan.shots[task.name],
                score=statistics.fmean(points),
                num_rows=len(mine),
                num_failed=sum(a.error is not None for a in mine),
                example=(first.text if first.error is None else f"[{first.error}]") if first else "",
            )
        )
    return results
