"""Task specs, the built-in generators (deterministic, fixed splits, rules that hold) and task files."""

from __future__ import annotations

import hashlib
import json
import random
import re

import pytest

from land import generators, vocab
from land.metrics import score
from land.spec import Metric, TaskDataInvalid, TaskNotFound, TaskSpec
from land.tasks import (
    BUILTIN_TASKS,
    builtin_task,
    builtin_train_file,
    generate_rows,
    load_task,
    materialize_task,
)
from gpu_engine.training import load_rows

# sha256 of each built-in task's test split (prompt + completion): the split is fixed.
# A change here means every published land result stops being comparable: change on purpose only.
TEST_SPLIT_SHA256 = {
    "sentiment": "1c49202a61fd9fd1",
    "topic": "e490cc6b86f63ad5",
    "arithmetic": "fa6eb26682a40297",
    "data_to_text": "03f4e812f35dca52",
    "entities": "741e85a1094b25ac",
    "rating": "9a29420331e40136",
}


def split_digest(rows) -> str:
    body = "\n".join(f"{row.prompt}\t{row.completion}" for row in rows)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


@pytest.mark.parametrize("name", list(BUILTIN_TASKS))
def test_builtin_split_is_fixed(name):
    assert split_digest(builtin_task(name).test) == TEST_SPLIT_SHA256[name]


@pytest.mark.parametrize("name", list(BUILTIN_TASKS))
def test_generation_is_deterministic_and_test_prompts_are_unseen(name):
    builtin = BUILTIN_TASKS[name]
    first = generate_rows(builtin.spec, builtin.generator, 300, 40)
    again = generate_rows(builtin.spec, builtin.generator, 300, 40)
    assert first == again
    assert first.test == builtin_task(name).test[:40]  # test rows come first, whatever the train size
    train_prompts = {row.prompt for row in first.train}
    assert len(train_prompts) == 300 and len({row.prompt for row in first.test}) == 40
    assert not train_prompts & {row.prompt for row in first.test}


@pytest.mark.parametrize("name", list(BUILTIN_TASKS))
def test_prompts_end_in_the_cue_and_gold_scores_full_marks(name):
    task = builtin_task(name)
    for row in task.test:
        assert row.prompt.endswith(":") and row.completion.startswith(" ")
        assert score(task.spec, row.completion, row.completion) == 1.0
    if task.spec.metric is Metric.ACCURACY:
        assert {row.completion.strip() for row in task.train} == set(task.spec.labels)


def _count(text: str, lexicon) -> int:
    return sum(word in lexicon for word in re.findall(r"\w+", text))


def test_sentiment_and_rating_follow_their_lexicon_rules():
    rng = random.Random(7)
    for _ in range(300):
        fields, label = generators.sentiment(rng)
        pos, neg = _count(fields["review"], vocab.POSITIVE_WORDS), _count(fields["review"], vocab.NEGATIVE_WORDS)
        assert pos != neg and label.strip() == ("positive" if pos > neg else "negative")
        fields, stars = generators.rating(rng)
        pos, neg = _count(fields["review"], vocab.POSITIVE_WORDS), _count(fields["review"], vocab.NEGATIVE_WORDS)
        assert int(stars) == min(5, max(1, 3 + pos - neg))


def test_arithmetic_entities_and_data_to_text_answers_follow_from_the_input():
    rng = random.Random(3)
    for _ in range(200):
        fields, answer = generators.arithmetic(rng)
        a, op, b, _, result = answer.split()
        assert str(a) in fields["question"] and str(b) in fields["question"]
        assert int(result) == (int(a) + int(b) if op == "+" else int(a) - int(b)) >= 0
        fields, answer = generators.entities(rng)
        person, city = re.fullmatch(r" person: (.+); city: (.+)", answer).groups()
        assert person in fields["sentence"] and city in fields["sentence"]
        fields, sentence = generators.data_to_text(rng)
        for value in re.findall(r"\[([^\]]+)\]", fields["meaning"]):
            assert value in sentence


def test_unknown_task_and_bad_specs_are_refused():
    with pytest.raises(TaskNotFound):
        load_task("no-such-task")
    for bad in (
        {"name": "Bad Name", "metric": "rouge_l", "template": "### In: {x}\n### Out:"},
        {"name": "t", "metric": "rouge_l", "template": "### In: {x}\n### Out"},  # no cue
        {"name": "t", "metric": "rouge_l", "template": "### Out:"},  # no input field
        {"name": "t", "metric": "accuracy", "template": "{x}\n### Label:", "labels": ("only",)},
        {"name": "t", "metric": "closeness", "template": "{x}\n### Stars:"},  # no range
        {"name": "t", "metric": "closeness", "template": "{x}\n### Stars:", "value_range": (5, 1)},
        {"name": "t", "metric": "rouge_l", "template": "{x}\n### Out:", "max_new_tokens": 0},
    ):
        with pytest.raises(ValueError):
            TaskSpec(**bad)


def test_materialized_task_feeds_the_training_loader_and_loads_back(tmp_path):
    files = materialize_task("topic", tmp_path)
    task = builtin_task("topic")
    rows = load_rows(files.train_path)
    assert [(r.prompt, r.completion) for r in rows] == [(r.prompt, r.completion) for r in task.train]
    first = files.train_path.read_bytes()
    assert materialize_task("topic", tmp_path).train_path.read_bytes() == first  # same bytes every time
    again = load_task(files.spec_path)
    assert again.spec.labels == task.spec.labels and again.spec.metric is task.spec.metric
    assert again.test == task.test and again.train == task.train


def test_builtin_train_file_resolves_names_never_paths(tmp_path):
    path = builtin_train_file("sentiment", tmp_path)
    assert path == tmp_path / "sentiment" / "train.jsonl"
    assert len(load_rows(path)) == len(builtin_task("sentiment").train)
    spec_path = materialize_task("topic", tmp_path / "other").spec_path
    with pytest.raises(TaskNotFound):
        builtin_train_file(str(spec_path), tmp_path)  # a task file is fine for eval, not from an event


def test_a_user_task_file_with_a_template(tmp_path):
    (tmp_path / "test.jsonl").write_text(
        json.dumps({"text": "where is my parcel", "completion": " delivery"})
        + "\n\n"
        + json.dumps({"text": "money back please", "completion": " refund"})
        + "\n"
    )
    (tmp_path / "intent.json").write_text(
        json.dumps(
            {
                "name": "intent",
                "metric": "accuracy",
                "labels": ["refund", "delivery"],
                "template": "Classify the message.\n### Message: {text}\n### Label:",
                "test": "test.jsonl",
            }
        )
    )
    task = load_task(tmp_path / "intent.json")
    assert task.train == () and [r.completion for r in task.test] == [" delivery", " refund"]
    assert task.test[0].prompt == "Classify the message.\n### Message: where is my parcel\n### Label:"


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ('{"text": "hi"}', "completion"),
        ("not json", "line 1"),
        ('{"completion": " x"}', "text"),
        ('{"text": "a", "completion": "  "}', "non-empty"),
        ("", "no rows"),
    ],
)
def test_a_broken_user_row_names_its_line(tmp_path, line, why):
    (tmp_path / "test.jsonl").write_text(line + "\n")
    (tmp_path / "t.json").write_text(
        json.dumps({"name": "t", "metric": "rouge_l", "template": "### In: {text}\n### Out:", "test": "test.jsonl"})
    )
    with pytest.raises(TaskDataInvalid, match=why):
        load_task(tmp_path / "t.json")


def test_a_broken_task_file_is_refused(tmp_path):
    (tmp_path / "t.json").write_text('{"name": "t", "metric": "nonsense", "template": null, "test": "x.jsonl"}')
    with pytest.raises(TaskDataInvalid):
        load_task(tmp_path / "t.json")


_PROMPT_ROWS = [{"prompt": "Review: a lovely evening\nSentiment:", "completion": " positive"},
                {"prompt": "Review: rude staff\nSentiment:", "completion": " negative"}]  # fmt: skip
_MINIMAL_TASK = {"name": "reviews", "metric": "accuracy", "labels": ["positive", "negative"], "test": "test.jsonl"}


@pytest.mark.parametrize(
    "field, value",
    [
        ("template", None),  # issue 17: a task file without "template" crashed
        ("train", "train.jsonl"),
        ("max_new_tokens", 4),
        ("description", "my reviews"),
        ("modelled_on", "sst2"),
    ],
)
def test_every_optional_task_file_field_may_be_left_out(tmp_path, field, value):
    """The minimal file (name, metric, labels, test) loads; each optional field, given, is honoured."""
    for name in ("test.jsonl", "train.jsonl"):
        (tmp_path / name).write_text("".join(json.dumps(row) + "\n" for row in _PROMPT_ROWS))
    (tmp_path / "minimal.json").write_text(json.dumps(_MINIMAL_TASK))
    minimal = load_task(tmp_path / "minimal.json")
    assert minimal.spec.template is None and minimal.train == () and minimal.spec.max_new_tokens == 16
    assert [r.prompt for r in minimal.test] == [row["prompt"] for row in _PROMPT_ROWS]
    (tmp_path / "given.json").write_text(json.dumps({**_MINIMAL_TASK, field: value}))
    given = load_task(tmp_path / "given.json")
    if field == "train":
        assert [r.completion for r in given.train] == [" positive", " negative"]
    else:
        assert getattr(given.spec, field) == value


@pytest.mark.parametrize(
    "body, why",
    [
        ({k: v for k, v in _MINIMAL_TASK.items() if k != "name"}, "missing fields \\['name'\\]"),
        ({k: v for k, v in _MINIMAL_TASK.items() if k != "metric"}, "missing fields \\['metric'\\]"),
        ({k: v for k, v in _MINIMAL_TASK.items() if k != "test"}, "missing fields \\['test'\\]"),
        ({k: v for k, v in _MINIMAL_TASK.items() if k != "labels"}, "at least two distinct labels"),
        ({**_MINIMAL_TASK, "metric": "closeness"}, "value_range"),
        ({**_MINIMAL_TASK, "templat": "x"}, "unknown fields \\['templat'\\]"),
    ],
)
def test_required_task_file_fields_are_named_when_missing(tmp_path, body, why):
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in _PROMPT_ROWS))
    (tmp_path / "t.json").write_text(json.dumps(body))
    with pytest.raises(TaskDataInvalid, match=why):
        load_task(tmp_path / "t.json")
