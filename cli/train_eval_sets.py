"""The release gate's evaluations, from LoRA Land (`land`): a built-in task's test split scored with
its own metric, or rows (a test file, a held-out split) scored with a named metric. The training
worker gets `land_eval_sets` injected (consumers never import an application)."""

from __future__ import annotations

import functools

from consumers.training.release_gate import EvalSet, EvalSource
from land import Metric, TaskNotFound, TaskSpec, builtin_task, score


def land_eval_sets(source: EvalSource) -> EvalSet:
    """Raises LookupError for an unknown built-in task, ValueError for a metric rows cannot use."""
    if source.task is not None:
        return _builtin(source.task)
    golds = tuple(gold for _, gold in source.rows)
    metric = Metric(source.metric)
    labels = tuple(dict.fromkeys(g.strip() for g in golds)) if metric is Metric.ACCURACY else ()
    spec = TaskSpec(source.name, metric, labels=labels)
    return EvalSet(
        source.name,
        metric.value,
        tuple(prompt for prompt, _ in source.rows),
        golds,
        spec.max_new_tokens,
        functools.partial(score, spec),
    )


@functools.lru_cache(maxsize=32)
def _builtin(name: str) -> EvalSet:
    try:
        task = builtin_task(name)
    except TaskNotFound as exc:
        raise LookupError(str(exc)) from exc
    return EvalSet(
        task.name,
        task.spec.metric.value,
        tuple(row.prompt for row in task.test),
        tuple(row.completion for row in task.test),
        task.spec.max_new_tokens,
        functools.partial(score, task.spec),
    )
