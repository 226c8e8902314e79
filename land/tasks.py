"""The built-in synthetic tasks, user task files, and writing a task's train/test JSONL to disk.

Built-in rows are generated from a seed named after the task, test rows first: the split is
fixed, and no test prompt appears among the training rows. A user task is a JSON file:

    {"name": "intent", "metric": "accuracy", "labels": ["refund", "delivery"],
     "template": "Classify the message.\\n### Message: {text}\\n### Label:",
     "train": "train.jsonl", "test": "test.jsonl", "max_new_tokens": 4}

whose JSONL rows hold the template's fields and `completion` (or, without a template, a ready
`prompt` and `completion`); relative paths are resolved against the task file. Required: `name`,
`metric` and `test`, plus `labels` for accuracy and `value_range` for closeness; everything else
is optional (TASK_FILE_FIELDS).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

from land import generators, vocab
from land.generators import Generator
from land.spec import (
    Metric,
    Task,
    TaskDataInvalid,
    TaskNotFound,
    TaskRow,
    TaskSpec,
)

NUM_TRAIN_ROWS = 2000
NUM_TEST_ROWS = 100
_MAX_DRAWS_PER_ROW = 50
_HEADER = "### "


@dataclass(frozen=True)
class BuiltinTask:
    spec: TaskSpec
    generator: Generator


def _template(instruction: str, field: str, title: str, cue: str) -> str:
    return f"{instruction}\n{_HEADER}{title}: {{{field}}}\n{_HEADER}{cue}:"


BUILTIN_TASKS: dict[str, BuiltinTask] = {
    t.spec.name: t
    for t in (
        BuiltinTask(
            TaskSpec(
                "sentiment",
                Metric.ACCURACY,
                _template("Is the review positive or negative?", "review", "Review", "Label"),
                description="review sentiment by lexicon",
                labels=("positive", "negative"),
                max_new_tokens=4,
                modelled_on="sst2",
            ),
            generators.sentiment,
        ),
        BuiltinTask(
            TaskSpec(
                "topic",
                Metric.ACCURACY,
                _template(
                    "Classify the headline: world, sports, business or science.", "headline", "Headline", "Topic"
                ),
                description="news topic of a headline",
                labels=tuple(vocab.TOPIC_WORDS),
                max_new_tokens=4,
                modelled_on="agnews",
            ),
            generators.topic,
        ),
        BuiltinTask(
            TaskSpec(
                "arithmetic",
                Metric.LAST_NUMBER,
                _template("Solve the problem.", "question", "Problem", "Answer"),
                description="one-step word problems",
                max_new_tokens=10,
                modelled_on="gsm8k",
            ),
            generators.arithmetic,
        ),
        BuiltinTask(
            TaskSpec(
                "data_to_text",
                Metric.ROUGE_L,
                _template("Describe the restaurant in one sentence.", "meaning", "Data", "Text"),
                description="restaurant attributes to a sentence",
                max_new_tokens=24,
                modelled_on="e2e_nlg",
            ),
            generators.data_to_text,
        ),
        BuiltinTask(
            TaskSpec(
                "entities",
                Metric.ROUGE_L,
                _template("Name the person and the city.", "sentence", "Sentence", "Entities"),
                description="person and city extraction",
                max_new_tokens=16,
                modelled_on="conllpp",
            ),
            generators.entities,
        ),
        BuiltinTask(
            TaskSpec(
                "rating",
                Metric.CLOSENESS,
                _template("Rate the review from 1 to 5 stars.", "review", "Review", "Stars"),
                description="review stars by lexicon",
                value_range=(1, 5),
                max_new_tokens=4,
                modelled_on="yelp (regression)",
            ),
            generators.rating,
        ),
    )
}


@dataclass(frozen=True)
class TaskFiles:
    """A task written to disk: `task.json` (loadable with `load_task`) and its JSONL splits."""

    spec_path: Path
    train_path: Path
    test_path: Path


def generate_rows(spec: TaskSpec, generator: Generator, num_train: int, num_test: int) -> Task:
    """A Task with distinct prompts, test rows drawn first from the seed named after the task."""
    if num_train < 1 or num_test < 1:
        raise ValueError("num_train and num_test must be >= 1")
    rng = random.Random(f"lorastream-land/{spec.name}")
    seen: set[str] = set()
    splits = []
    for count in (num_test, num_train):
        rows: list[TaskRow] = []
        for _ in range(count * _MAX_DRAWS_PER_ROW):
            fields, completion = generator(rng)
            prompt = spec.render(fields)
            if prompt not in seen:
                seen.add(prompt)
                rows.append(TaskRow(prompt, completion))
                if len(rows) == count:
                    break
        if len(rows) < count:
            raise TaskDataInvalid(f"task {spec.name}: only {len(rows)} distinct prompts of {count} asked")
        splits.append(tuple(rows))
    test, train = splits
    return Task(spec, train, test)


@functools.cache
def builtin_task(name: str, num_train: int = NUM_TRAIN_ROWS, num_test: int = NUM_TEST_ROWS) -> Task:
    """A built-in task with its fixed split; raises TaskNotFound."""
    try:
        builtin = BUILTIN_TASKS[name]
    except KeyError:
        raise TaskNotFound(f"no built-in task {name!r}; built in: {', '.join(BUILTIN_TASKS)}") from None
    return generate_rows(builtin.spec, builtin.generator, num_train, num_test)


def load_task(ref: str | Path) -> Task:
    """A built-in task by name, or a user task from its JSON file. Raises TaskNotFound, TaskDataInvalid."""
    if str(ref) in BUILTIN_TASKS:
        return builtin_task(str(ref))
    path = Path(ref)
    if not path.is_file():
        raise TaskNotFound(f"{ref!r} is neither a built-in task ({', '.join(BUILTIN_TASKS)}) nor a task file")
    return load_task_file(path)


REQUIRED_TASK_FIELDS = ("name", "metric", "test")
OPTIONAL_TASK_FIELDS = ("template", "train", "labels", "value_range", "max_new_tokens", "description", "modelled_on")
TASK_FILE_FIELDS = REQUIRED_TASK_FIELDS + OPTIONAL_TASK_FIELDS


def load_task_file(path: str | Path) -> Task:
    """A user task (see the module docstring); raises TaskDataInvalid."""
    path = Path(path)
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(body, dict):
            raise ValueError("a task file holds one JSON object")
        missing = [name for name in REQUIRED_TASK_FIELDS if name not in body]
        unknown = sorted(set(body) - set(TASK_FILE_FIELDS))
        if missing or unknown:
            raise ValueError(f"missing fields {missing}, unknown fields {unknown}; known: {', '.join(TASK_FILE_FIELDS)}")
        train_file, test_file = body.pop("train", None), body.pop("test")
        if "value_range" in body:
            body["value_range"] = tuple(body["value_range"])
        spec = TaskSpec(**body)
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TaskDataInvalid(f"task file {path}: {exc}") from exc
    train = read_rows(spec, path.parent / train_file) if train_file else ()
    test = read_rows(spec, path.parent / test_file)
    if not test:
        raise TaskDataInvalid(f"task file {path}: {test_file} has no rows")
    return Task(spec, train, test)


def read_rows(spec: TaskSpec, path: Path) -> tuple[TaskRow, ...]:
    """JSONL rows rendered through the spec's template; raises TaskDataInvalid naming the line."""
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskDataInvalid(f"{path}: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            completion = row["completion"]
            prompt = spec.render({k: str(v) for k, v in row.items()})
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
            raise TaskDataInvalid(f"{path}, line {number}: {exc!r}") from exc
        if not isinstance(completion, str) or not completion.strip():
            raise TaskDataInvalid(f"{path}, line {number}: completion must be a non-empty string")
        rows.append(TaskRow(prompt, completion))
    return tuple(rows)


def materialize_task(task: str | Task, out_dir: str | Path) -> TaskFiles:
    """Write `<out_dir>/<name>/{train,test}.jsonl` (prompt/completion rows) and `task.json`.

    The JSONL is what a TrainingRequest's dataset points at; files are replaced atomically and
    the same task always writes the same bytes.
    """
    task = load_task(task) if isinstance(task, str) else task
    folder = Path(out_dir) / task.name
    folder.mkdir(parents=True, exist_ok=True)
    files = TaskFiles(folder / "task.json", folder / "train.jsonl", folder / "test.jsonl")
    for path, rows in ((files.train_path, task.train), (files.test_path, task.test)):
        _write_atomic(path, "".join(json.dumps(dataclasses.asdict(row)) + "\n" for row in rows))
    spec = {k: v for k, v in dataclasses.asdict(task.spec).items() if v not in ((), None, "")}
    spec.update(metric=task.spec.metric.value, template=None, train="train.jsonl", test="test.jsonl")
    _write_atomic(files.spec_path, json.dumps(spec, indent=2) + "\n")
    return files


def builtin_train_file(name: str, out_dir: str | Path) -> Path:
    """The training JSONL of built-in task `name`, written under `out_dir` (for `DatasetRef.task`).

    Only built-in names: a name that came in an event never becomes a path. Raises TaskNotFound.
    """
    return materialize_task(builtin_task(name), out_dir).train_path


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
