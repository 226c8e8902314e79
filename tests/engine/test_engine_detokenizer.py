"""Incremental detokenization over a byte tokenizer (one token per UTF-8 byte), table-driven."""

from __future__ import annotations

import pytest

from gpu_engine.detokenizer import IncrementalDetokenizer


class ByteTokenizer:
    def decode(self, ids, skip_special_tokens=True):
        return bytes(ids).decode("utf-8", errors="replace")


def stream(text: str, stop=()) -> tuple[list[str], IncrementalDetokenizer]:
    detok = IncrementalDetokenizer(ByteTokenizer(), list(b"prompt"), stop)
    pieces = [detok.push(b) for b in text.encode()]
    pieces.append(detok.finish())
    return pieces, detok


@pytest.mark.parametrize("text", ["plain ascii", "café", "日本語", "a😀b", "😀😀", "ß€→ü"])
def test_multibyte_characters_are_never_split(text):
    pieces, _ = stream(text)
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_incomplete_bytes_are_held_until_complete():
    detok = IncrementalDetokenizer(ByteTokenizer(), [], ())
    emoji = "😀".encode()
    assert [detok.push(b) for b in emoji] == ["", "", "", "😀"]


def test_truncated_character_is_flushed_as_replacement_at_the_end():
    detok = IncrementalDetokenizer(ByteTokenizer(), [], ())
    assert detok.push(ord("a")) == "a"
    assert detok.push("😀".encode()[0]) == ""
    assert detok.finish() == "\ufffd"


@pytest.mark.parametrize(
    ("text", "stop", "expected", "stopped"),
    [
        ("hello world", ("world",), "hello ", True),
        ("hello world", ("xyz",), "hello world", False),
        ("hello world", ("o w", "ld"), "hell", True),
        ("abcabd", ("abd",), "abc", True),
        ("nope", ("nope",), "", True),
        ("café!", ("é",), "caf", True),
        ("ends with sto", ("stop",), "ends with sto", False),
    ],
)
def test_stop_strings(text, stop, expected, stopped):
    pieces, detok = stream(text, stop)
    assert "".join(pieces) == expected
    assert detok.stopped is stopped


def test_stop_string_prefix_is_held_back_until_decided():
    detok = IncrementalDetokenizer(ByteTokenizer(), [], ("STOP",))
    assert [detok.push(b) for b in b"aST"] == ["a", "", ""]
    assert detok.push(ord("x")) == "STx"
