"""`lorastream eval`: every test prompt of the chosen tasks, to the base and to each task's adapter,
as one mixed concurrent run through Kafka; then scored per task.

The requests are interleaved (a seeded shuffle), so the service batches base and adapter
requests of every task together, as it would in production. Decoding is greedy; an answer that
fails (an Error record, a timeout) scores 0 and is counted.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from land.metrics import score
from land.results import MAX_EXAMPLES, MAX_MISSES, EvalResult, Sample, TaskResult
from land.spec import Task
from schemas import LorastreamError
from streamer import LoraClient

BASE = "base"
ADAPTER = "adapter"


@dataclass(frozen=True)
class EvalConfig:
    """`max_test_rows` caps rows per task (None: all); `max_inflight` caps concurrent requests."""

    max_test_rows: int | None = None
    max_inflight: int = 256
    timeout_s: float = 300.0
    shuffle_seed: int = 0

    def __post_init__(self) -> None:
        if self.max_test_rows is not None and self.max_test_rows < 1:
            raise ValueError("max_test_rows must be >= 1")
        if self.max_inflight < 1:
            raise ValueError("max_inflight must be >= 1")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")


@dataclass(frozen=True)
class EvalItem:
    """One request of the run: a test row of a task, for the base or for the task's adapter."""

    task: str
    target: str  # BASE or ADAPTER
    row: int
    prompt: str
    gold: str
    adapter_id: str | None
    max_new_tokens: int
    base: str | None = None  # the base model's name on the wire (its lane); None: the deployment's default


@dataclass(frozen=True)
class Answer:
    item: EvalItem
    text: str
    error: str | None = None  # why no text came back
    latency_ms: float = 0.0


def plan_requests(
    tasks: Sequence[Task], adapter_ids: dict[str, str], config: EvalConfig, base: str | None = None
) -> list[EvalItem]:
    """Base and adapter requests for every test row, shuffled together (seeded), for the base named
    `base` (None: the deployment's default)."""
    missing = [task.name for task in tasks if task.name not in adapter_ids]
    if missing:
        raise ValueError(f"no adapter id for task(s) {missing}")
    items = []
    for task in tasks:
        rows = task.test[: config.max_test_rows]
        for target, adapter_id in ((BASE, None), (ADAPTER, adapter_ids[task.name])):
            items.extend(
                EvalItem(task.name, target, i, row.prompt, row.completion, adapter_id, task.spec.max_new_tokens, base)
                for i, row in enumerate(rows)
            )
    random.Random(config.shuffle_seed).shuffle(items)
    return items


async def collect_answers(
    client: LoraClient,
    items: Sequence[EvalItem],
    config: EvalConfig,
    on_answer: Callable[[Answer], None] = lambda answer: None,
) -> list[Answer]:
    """Every item through `client` at most `max_inflight` at a time; answers in the items' order."""
    gate = asyncio.Semaphore(config.max_inflight)

    async def ask(item: EvalItem) -> Answer:
        async with gate:
            started = time.monotonic()
            lane = {} if item.base is None else {"base": item.base}
            try:
                final = await client.generate(
                    item.prompt, item.adapter_id, max_new_tokens=item.max_new_tokens, timeout_s=config.timeout_s, **lane
                )
            except LorastreamError as exc:
                answer = Answer(item, "", error=f"{type(exc).__name__}: {exc}")
            else:
                answer = Answer(item, final.text, latency_ms=(time.monotonic() - started) * 1000)
        on_answer(answer)
        return answer

    return list(await asyncio.gather(*(ask(item) for item in items)))


def score_answers(tasks: Sequence[Task], answers: Sequence[Answer], adapter_ids: dict[str, str]) -> list[TaskResult]:
    """Per task: mean score ×100 for the base and for the adapter (failed answers score 0), the first
    test rows as examples and the first rows the adapter missed (bounded: `land.results`)."""
    results = []
    for task in tasks:
        points, errors = {BASE: {}, ADAPTER: {}}, {BASE: 0, ADAPTER: 0}
        texts: dict[str, dict[int, str]] = {BASE: {}, ADAPTER: {}}
        for answer in answers:
            item = answer.item
            if item.task != task.name:
                continue
            points[item.target][item.row] = 100.0 * score(task.spec, answer.text, item.gold)
            texts[item.target][item.row] = answer.text if answer.error is None else f"[{answer.error}]"
            errors[item.target] += answer.error is not None
        if not points[ADAPTER] or not points[BASE]:
            raise ValueError(f"task {task.name}: no answers to score")
        rows = sorted(set(points[ADAPTER]) & set(points[BASE]))

        def sample(row: int) -> Sample:
            test = task.test[row]
            return Sample(test.prompt, test.completion, texts[BASE][row], texts[ADAPTER][row], points[ADAPTER][row])

        examples = [sample(row) for row in rows[:MAX_EXAMPLES]]
        misses = [sample(row) for row in rows if points[ADAPTER][row] < 100.0][:MAX_MISSES]
        results.append(
            TaskResult(
                name=task.name,
                metric=task.spec.metric.value,
                adapter_id=adapter_ids[task.name],
                num_rows=len(points[ADAPTER]),
                base=statistics.fmean(points[BASE].values()),
                adapter=statistics.fmean(points[ADAPTER].values()),
                num_failed_base=errors[BASE],
                num_failed_adapter=errors[ADAPTER],
                example_prompt=task.test[0].prompt,
                example_gold=task.test[0].completion,
                example_base=texts[BASE].get(0, ""),
                example_adapter=texts[ADAPTER].get(0, ""),
                examples=tuple(examples),
                misses=tuple(misses),
            )
        )
    return results


async def evaluate(
    client: LoraClient,
    tasks: Sequence[Task],
    adapter_ids: dict[str, str],
    config: EvalConfig = EvalConfig(),
    on_answer: Callable[[Answer], None] = lambda answer: None,
    title: str = EvalResult.title,
) -> EvalResult:
    """Plan, send, score: the whole evaluation through `client`; `title` says what was evaluated."""
    items = plan_requests(tasks, adapter_ids, config)
    started = time.monotonic()
    answers = await collect_answers(client, items, config, on_answer)
    return eval_result(tasks, answers, adapter_ids, time.monotonic() - started, title)


def eval_result(
    tasks: Sequence[Task], answers: Sequence[Answer], adapter_ids: dict[str, str], wall_s: float, title: str
) -> EvalResult:
    """The scores of one base's answers (base and adapter requests), with the run's wall time."""
    latencies = sorted(a.latency_ms for a in answers if a.error is None)
    return EvalResult(
        tasks=tuple(score_answers(tasks, answers, adapter_ids)),
        num_requests=len(answers),
        wall_s=wall_s,
        latency_ms_p50=latencies[len(latencies) // 2] if latencies else 0.0,
        title=title,
    )
