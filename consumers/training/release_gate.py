"""The release gate: a finished job's adapter is announced only when its release rule holds.

A request's `evaluation` names what the candidate is scored on (a built-in task, a test file, or
the job's own held-out split); the application supplies the tasks and their metrics (`EvalSets`:
`land` does, consumers never import an application). After training, `ReleaseGate.evaluate`
decodes every evaluation prompt greedily on the serving code path (`gpu_engine.training.
candidate_eval`: one Engine with the base, the candidate and, for `beat_served`, the version
served now), scores the answers with the task's metric (points, 0-100) and applies the rule
(`decide`). Blocking and torch-heavy: the worker calls `evaluate` in a thread.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from consumers.training.config import TrainWorkerConfig
from gpu_engine.training.candidate_eval import BASE, CandidateEvalConfig, generate_answers
from gpu_engine.training.dataset import parse_rows, split_rows
from gpu_engine.training.dataset_source import read_dataset
from gpu_engine.training.spec import TrainJobSpec
from schemas import TrainingRequest
from schemas.training import Evaluation, ReleaseDecision, ReleaseRule, ReleaseScores

EVAL_FILE = "eval.jsonl"  # the job's own copy of a request's test file, in its job directory
HELD_OUT_TASK = "held_out"  # the task name scores carry for the job's held-out split
TEST_FILE_TASK = "test_file"  # ... and for a request's test file
DEFAULT_MAX_NEW_TOKENS = 32  # answers to a test file or held-out rows (a task names its own bound)
CANDIDATE, SERVED = "candidate", "served"


@dataclass(frozen=True)
class EvalSource:
    """What to score on: a built-in task by name, or rows (prompt, gold) scored with `metric`."""

    task: str | None = None
    rows: tuple[tuple[str, str], ...] = ()
    metric: str = "rouge_l"
    name: str = HELD_OUT_TASK  # what the scores call rows: HELD_OUT_TASK or TEST_FILE_TASK


@dataclass(frozen=True)
class EvalSet:
    task: str
    metric: str
    prompts: tuple[str, ...]
    golds: tuple[str, ...]
    max_new_tokens: int
    score: Callable[[str, str], float]  # (answer, gold) -> a score in [0, 1]


EvalSets = Callable[[EvalSource], EvalSet]
"""An evaluation source -> its prompts, golds and metric; raises LookupError for an unknown task.
The application supplies it (`cli.train_eval_sets.land_eval_sets`)."""

AnswerGenerator = Callable[[CandidateEvalConfig, Sequence[str], dict[str, str], int], dict[str, list[str]]]


def decide(
    rule: ReleaseRule, margin_points: float, candidate: float | None, base: float | None, served: float | None
) -> tuple[ReleaseDecision, str]:
    """The rule applied to the scores (points): the decision and why, in words.

    `beat_base`: candidate > base + margin. `beat_served`: candidate > served + margin, the base
    standing in for the served version when none is announced.
    """
    if rule is ReleaseRule.ALWAYS:
        return ReleaseDecision.RELEASED, "released: the rule is always"
    if candidate is None or base is None:
        raise ValueError(f"rule {rule.value} needs the candidate's and the base's scores")
    against, name = (base, "the base") if rule is ReleaseRule.BEAT_BASE or served is None else (served, "the served version")
    needed = against + margin_points
    if candidate > needed:
        return ReleaseDecision.RELEASED, f"released: {candidate:.1f} beats {name}'s {against:.1f} by more than {margin_points:g}"
    return ReleaseDecision.KEPT, f"kept: {candidate:.1f} does not beat {name}'s {against:.1f} by more than {margin_points:g}"


def check_release(request: TrainingRequest, eval_sets: EvalSets | None) -> None:
    """Raises ValueError for a rule without an evaluation, an evaluation naming no source or two,
    or a built-in task this worker does not know."""
    evaluation = request.evaluation
    if evaluation is None:
        if request.release.rule is not ReleaseRule.ALWAYS:
            raise ValueError(f"release rule {request.release.rule.value} needs an evaluation")
        return
    sources = [evaluation.task is not None, evaluation.test_uri is not None, evaluation.held_out]
    if sum(sources) != 1:
        raise ValueError("an evaluation names exactly one of task, test_uri and held_out")
    if eval_sets is None:
        raise ValueError("this worker evaluates nothing: it was started without evaluation tasks")
    if evaluation.task is not None:
        try:
            eval_sets(EvalSource(task=evaluation.task))
        except LookupError as exc:
            raise ValueError(f"unknown evaluation task {evaluation.task!r}: {exc}") from exc


def copy_test_file(config: TrainWorkerConfig, evaluation: Evaluation, job_dir: Path) -> None:
    """A request's test file, read within the dataset roots and caps, copied into the job directory
    (raises the dataset's TrainingErrors)."""
    if evaluation.test_uri is None:
        return
    data = read_dataset(
        evaluation.test_uri,
        config.dataset_roots,
        max_bytes=config.max_dataset_bytes,
        s3_endpoint_url=config.s3_endpoint_url,
    )
    (job_dir / EVAL_FILE).write_bytes(data)


class ReleaseGate:
    """Scores a candidate and decides its release. `generate` answers the prompts (tests script it)."""

    def __init__(
        self, config: TrainWorkerConfig, eval_sets: EvalSets | None, generate: AnswerGenerator = generate_answers
    ) -> None:
        self._config, self._eval_sets, self._generate = config, eval_sets, generate

    def evaluate(
        self, request: TrainingRequest, spec: TrainJobSpec, job_dir: Path, candidate_dir: str, served: tuple[int, str] | None
    ) -> ReleaseScores:
        """Score the candidate (and the base, and `served` = (version, directory) for beat_served)."""
        evaluation, release = request.evaluation, request.release
        eval_set = self._eval_set(evaluation, spec, job_dir)
        adapters = {CANDIDATE: candidate_dir}
        if release.rule is ReleaseRule.BEAT_SERVED and served is not None:
            adapters[SERVED] = served[1]
        engine_config = CandidateEvalConfig(self._config.base_model_path, device=self._config.device)
        answers = self._generate(engine_config, eval_set.prompts, adapters, eval_set.max_new_tokens)
        points = {
            label: 100.0 * statistics.fmean(eval_set.score(a, g) for a, g in zip(texts, eval_set.golds, strict=True))
            for label, texts in answers.items()
        }
        served_points = points.get(SERVED)
        decision, reason = decide(release.rule, release.margin_points, points[CANDIDATE], points[BASE], served_points)
        return ReleaseScores(
            decision=decision,
            rule=release.rule,
            margin_points=release.margin_points,
            task=eval_set.task,
            metric=eval_set.metric,
            num_examples=len(eval_set.prompts),
            candidate=points[CANDIDATE],
            base=points[BASE],
            served=served_points,
            served_version=served[0] if served_points is not None else None,
            reason=reason,
        )

    def _eval_set(self, evaluation: Evaluation, spec: TrainJobSpec, job_dir: Path) -> EvalSet:
        if evaluation.task is not None:
            full = self._eval_sets(EvalSource(task=evaluation.task))
            max_new = evaluation.max_new_tokens or full.max_new_tokens
        else:
            name = TEST_FILE_TASK if evaluation.test_uri is not None else HELD_OUT_TASK
            rows = eval_rows(evaluation, spec, job_dir)
            full = self._eval_sets(EvalSource(rows=rows, metric=evaluation.metric.value, name=name))
            max_new = evaluation.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
        n = evaluation.max_examples
        return EvalSet(full.task, full.metric, full.prompts[:n], full.golds[:n], max_new, full.score)


def eval_rows(evaluation: Evaluation, spec: TrainJobSpec, job_dir: Path) -> tuple[tuple[str, str], ...]:
    """(prompt, gold) rows of a test file's copy, or of the job's held-out split (the trainer's own);
    raises ValueError when there are none, TrainingError for a malformed test file."""
    if evaluation.test_uri is not None:
        data = (job_dir / EVAL_FILE).read_bytes()
        rows = parse_rows(data, spec.prompt_field, spec.completion_field, max_rows=spec.max_dataset_rows, name=EVAL_FILE)
    else:
        data = Path(spec.dataset_path).read_bytes()
        all_rows = parse_rows(data, spec.prompt_field, spec.completion_field, max_rows=spec.max_dataset_rows)
        rows = split_rows(all_rows, spec.eval_fraction, spec.max_eval_rows, spec.seed)[1]
    if not rows:
        raise ValueError("the evaluation has no rows (a held-out split needs a larger dataset or eval_fraction)")
    return tuple((row.prompt, row.completion) for row in rows)
