"""Dataset loading: malformed rows are reported with their line numbers; masking; the eval split."""

from __future__ import annotations

import json

import pytest

from gpu_engine.training import DatasetInvalidError, DatasetNotFoundError, Row, load_rows, split_rows
from gpu_engine.training.examples import IGNORE_INDEX, tokenize_rows


def test_rows_and_blank_lines(tmp_path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n\n  \n{"prompt": "c", "completion": "d"}\n')
    assert load_rows(path) == [Row("a", "b", 1), Row("c", "d", 4)]
    path.write_text('{"q": "c", "a": "d", "extra": 1}\n')
    assert load_rows(path, "q", "a") == [Row("c", "d", 1)]


def test_every_malformed_line_is_named(tmp_path) -> None:
    path = tmp_path / "d.jsonl"
    lines = [
        json.dumps({"prompt": "ok", "completion": "fine"}),
        "{not json",
        "[1, 2]",
        json.dumps({"prompt": "no completion"}),
        json.dumps({"prompt": 3, "completion": "x"}),
        json.dumps({"prompt": "p", "completion": ""}),
    ]
    path.write_bytes("\n".join(lines).encode() + b"\n\xff\xfe\n")
    with pytest.raises(DatasetInvalidError) as caught:
        load_rows(path)
    assert [n for n, _ in caught.value.line_errors] == [2, 3, 4, 5, 6, 7]
    message = str(caught.value)
    assert "6 malformed row(s)" in message
    for expected in (
        "line 2: not valid JSON",
        "line 3: expected a JSON object",
        "line 4: missing field 'completion'",
        "line 5: field 'prompt' must be a string",
        "line 6: field 'completion' is empty",
        "line 7: not UTF-8",
    ):
        assert expected in message


def test_missing_and_empty_datasets(tmp_path) -> None:
    with pytest.raises(DatasetNotFoundError):
        load_rows(tmp_path / "absent.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DatasetInvalidError, match="no rows"):
        load_rows(tmp_path / "empty.jsonl")


def test_split_is_seeded_and_keeps_a_training_row() -> None:
    rows = [Row(str(i), "c", i + 1) for i in range(40)]
    train, held_out = split_rows(rows, 0.1, 64, seed=3)
    assert (len(train), len(held_out)) == (36, 4)
    assert split_rows(rows, 0.1, 64, seed=3) == (train, held_out)
    assert not set(r.line for r in train) & set(r.line for r in held_out)
    assert split_rows(rows, 0.5, 2, seed=3)[1].__len__() == 2
    assert split_rows(rows[:1], 0.9, 64, seed=0) == (rows[:1], [])


def test_loss_covers_the_completion_only(tiny_base) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_base))
    (example,), dropped = tokenize_rows(tokenizer, [Row("the cat sees", " a dog", 1)], max_seq_len=64)
    prompt_ids = tokenizer("the cat sees")["input_ids"]
    completion_ids = tokenizer(" a dog", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert dropped == 0
    assert list(example.input_ids) == prompt_ids + completion_ids
    assert example.labels() == [IGNORE_INDEX] * len(prompt_ids) + completion_ids
    assert example.num_loss_tokens == len(completion_ids)


def test_truncation_drops_rows_left_without_completion(tiny_base) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_base))
    long_prompt = " ".join(["the river"] * 20)
    examples, dropped = tokenize_rows(tokenizer, [Row(long_prompt, " yes", 1), Row("a", " no", 2)], max_seq_len=8)
    assert dropped == 1
    assert len(examples) == 1 and len(examples[0].input_ids) <= 8
