"""Metrics, table-driven: answer cutting, loose labels, ROUGE-L, last number, closeness, score."""

from __future__ import annotations

import pytest

from land.metrics import (
    answer_text,
    closeness,
    last_number_match,
    lcs_length,
    match_label,
    numbers,
    rouge_l_f,
    score,
)
from land.spec import Metric, TaskSpec

LABELS = ("positive", "negative")
TOPICS = ("world", "sports", "business", "science")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (" positive", "positive"),
        ("  positive\n### Review: more", "positive"),
        (" 4 + 3 = 7 ### Answer: 9", "4 + 3 = 7"),
        ("\n\n late start", "late start"),  # leading blank lines are skipped
        ("", ""),
    ],
)
def test_answer_text_stops_at_the_first_newline_or_section(raw, expected):
    assert answer_text(raw) == expected


@pytest.mark.parametrize(
    ("answer", "labels", "expected"),
    [
        ("positive", LABELS, "positive"),
        ("Positive.", LABELS, "positive"),
        ("  NEGATIVE!!", LABELS, "negative"),
        ("I think it is negative", LABELS, "negative"),  # the only label present
        ("positive or negative", LABELS, None),  # echoing the options is no answer
        ("positive, though the staff was negative", LABELS, None),
        ("positive. Positive!", LABELS, "positive"),
        ("positively", LABELS, None),  # whole words only
        ("", LABELS, None),
        ("the sports pages", TOPICS, "sports"),
        ("new york", ("new", "new york"), "new york"),  # a label inside a longer one does not count
        ("new", ("new", "new york"), "new"),
    ],
)
def test_match_label_is_loose_but_not_sloppy(answer, labels, expected):
    assert match_label(answer, labels) == expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("", "", 0),
        ("a b c", "", 0),
        ("a b c d", "a c d", 3),
        ("a b c", "c b a", 1),
        ("x y z", "a b c", 0),
        ("a a a", "a a", 2),
    ],
)
def test_lcs_length(a, b, expected):
    assert lcs_length(a.split(), b.split()) == expected


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("the cat sat", "the cat sat", 1.0),
        ("The Cat, sat!", "the cat sat", 1.0),  # case and punctuation do not count
        ("", "", 1.0),
        ("", "the cat", 0.0),
        ("the cat", "", 0.0),
        ("dog", "the cat", 0.0),
        # lcs 3 ("the cat on"), P = 3/4, R = 3/5 -> F = 2PR/(P+R) = 2/3
        ("the cat on mat", "the cat sat on floor", 2 / 3),
        # lcs 1, P = 1/1, R = 1/4 -> F = 0.4
        ("cat", "the cat sat down", 0.4),
    ],
)
def test_rouge_l_f(prediction, reference, expected):
    assert rouge_l_f(prediction, reference) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4 + 3 = 7", [4.0, 3.0, 7.0]), ("-2 and 1.5", [-2.0, 1.5]), ("1,000 coins", [1000.0]), ("none", [])],
)
def test_numbers(text, expected):
    assert numbers(text) == expected


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("4 + 3 = 7", " 4 + 3 = 7", 1.0),
        ("7", "4 + 3 = 7", 1.0),
        ("the answer is 7.0", "7", 1.0),
        ("4 + 3 = 8", "4 + 3 = 7", 0.0),
        ("7 apples, I think 6", "7", 0.0),  # the last number counts
        ("no idea", "7", 0.0),
    ],
)
def test_last_number_match(prediction, reference, expected):
    assert last_number_match(prediction, reference) == expected


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("4", "4", 1.0),
        ("5", "4", 0.75),  # 1 - 1/4 on a 1..5 range
        ("1", "5", 0.0),
        ("9 stars", "5", 1.0),  # clamped to the range
        ("3 or 5", "3", 1.0),  # the first number counts
        ("many", "3", 0.0),
    ],
)
def test_closeness(prediction, reference, expected):
    assert closeness(prediction, reference, (1.0, 5.0)) == pytest.approx(expected)


def _spec(metric: Metric, **kw) -> TaskSpec:
    return TaskSpec("t", metric, "### In: {x}\n### Out:", **kw)


@pytest.mark.parametrize(
    ("spec", "raw", "gold", "expected"),
    [
        (_spec(Metric.ACCURACY, labels=LABELS), " Positive\n### more", " positive", 1.0),
        (_spec(Metric.ACCURACY, labels=LABELS), " negative", " positive", 0.0),
        (_spec(Metric.ACCURACY, labels=LABELS), " the food was great", " positive", 0.0),
        (_spec(Metric.ROUGE_L), " the cat sat\nand then more", " the cat sat", 1.0),
        (_spec(Metric.LAST_NUMBER), " 2 + 2 = 4", " 2 + 2 = 4", 1.0),
        (_spec(Metric.CLOSENESS, value_range=(1, 5)), " 3", " 5", 0.5),
    ],
)
def test_score_cuts_the_answer_then_applies_the_metric(spec, raw, gold, expected):
    assert score(spec, raw, gold) == pytest.approx(expected)
