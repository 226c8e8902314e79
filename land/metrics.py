"""Scoring one generated answer against its gold completion; every score is in [0, 1].

An answer is first cut to what follows the cue: leading whitespace skipped, and nothing after the
first newline or the next `###` section (a base model that never stops is not charged for the
rest of its ramble, nor credited for it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from land.spec import Metric, TaskSpec

_WORD_RE = re.compile(r"\w+")
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")
_SECTION_RE = re.compile(r"\n|###")


def answer_text(raw: str) -> str:
    """The answer part of a completion: up to the first newline or `###`, stripped."""
    return _SECTION_RE.split(raw.lstrip(), maxsplit=1)[0].strip()


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits, underscore)."""
    return _WORD_RE.findall(text.lower())


def match_label(answer: str, labels: Sequence[str]) -> str | None:
    """The one label an answer names, loosely: case, punctuation and extra words are ignored.

    None when no label appears, or several do ("positive or negative" echoes the options and is
    not an answer). A label inside a longer label that also appears ("new" in "new york") does
    not count on its own.
    """
    tokens = words(answer)
    present = [label for label in dict.fromkeys(labels) if _contains(tokens, words(label))]
    named = [p for p in present if not any(q != p and _contains(words(q), words(p)) for q in present)]
    return named[0] if len(named) == 1 else None


def _contains(tokens: list[str], part: list[str]) -> bool:
    n = len(part)
    return n > 0 and any(tokens[i : i + n] == part for i in range(len(tokens) - n + 1))


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (O(len(a)·len(b)) time, O(len(b)) memory)."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l_f(prediction: str, reference: str) -> float:
    """ROUGE-L F1 (beta 1) over lower-cased word tokens; two empty texts score 1."""
    pred, ref = words(prediction), words(reference)
    if not pred or not ref:
        return float(not pred and not ref)
    lcs = lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def numbers(text: str) -> list[float]:
    """Every number in the text, in order (thousands separators ignored)."""
    return [float(n) for n in _NUMBER_RE.findall(re.sub(r"(?<=\d),(?=\d{3})", "", text))]


def last_number_match(prediction: str, reference: str) -> float:
    """1.0 when both texts have numbers and their last ones are equal."""
    pred, ref = numbers(prediction), numbers(reference)
    return float(bool(pred) and bool(ref) and pred[-1] == ref[-1])


def closeness(prediction: str, reference: str, value_range: tuple[float, float]) -> float:
    """1 - |p - g| / (high - low), p the answer's first number clamped to the range; 0 without one."""
    pred, ref = numbers(prediction), numbers(reference)
    if not pred or not ref:
        return 0.0
    low, high = value_range
    clamped = min(max(pred[0], low), high)
    return max(0.0, 1.0 - abs(clamped - ref[-1]) / (high - low))


def score(spec: TaskSpec, raw_answer: str, gold: str) -> float:
    """One answer's score for the task's metric, in [0, 1]."""
    answer, gold = answer_text(raw_answer), gold.strip()
    if spec.metric is Metric.ACCURACY:
        gold_label = match_label(gold, spec.labels)
        return float(gold_label is not None and match_label(answer, spec.labels) == gold_label)
    if spec.metric is Metric.ROUGE_L:
        return rouge_l_f(answer, gold)
    if spec.metric is Metric.LAST_NUMBER:
        return last_number_match(answer, gold)
    return closeness(answer, gold, spec.value_range)
