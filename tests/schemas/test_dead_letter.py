"""Dead letters always fit: whole originals up to the limit, else truncated with size and SHA-256."""

from __future__ import annotations

import hashlib

import pytest

from schemas import DeadLetter, ErrorCode, decode, encode
from schemas.deadletter import DEFAULT_DEAD_LETTER_ORIGINAL_BYTES, MAX_REASON_CHARS, dead_letter

KAFKA_DEFAULT_MAX_REQUEST_BYTES = 1_048_576


def _letter(original: bytes, reason: str = "bad", **kw) -> DeadLetter:
    return dead_letter(
        source_topic="ls.requests", partition=3, offset=9, code=ErrorCode.MALFORMED, reason=reason,
        original=original, request_id=None, ts_ms=1, **kw,
    )


@pytest.mark.parametrize("size", [0, 100, DEFAULT_DEAD_LETTER_ORIGINAL_BYTES, 900_000, 10 * 1024 * 1024])
def test_a_dead_letter_of_any_size_fits_a_default_kafka_record(size):
    original = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    letter = _letter(original, reason="r" * 100_000)
    wire = encode(letter)
    assert len(wire) < KAFKA_DEFAULT_MAX_REQUEST_BYTES - 1024  # room for key and record headers
    back = decode(wire, DeadLetter)
    assert back.original_bytes == size
    assert back.original_sha256 == hashlib.sha256(original).hexdigest()
    assert back.truncated is (size > DEFAULT_DEAD_LETTER_ORIGINAL_BYTES)
    assert original.startswith(back.original)
    assert back.original == original if not back.truncated else len(back.original) == DEFAULT_DEAD_LETTER_ORIGINAL_BYTES
    assert len(back.reason) <= MAX_REASON_CHARS


def test_the_limit_is_configurable():
    letter = _letter(b"0123456789", max_original_bytes=4)
    assert (letter.original, letter.truncated, letter.original_bytes) == (b"0123", True, 10)
    with pytest.raises(ValueError):
        _letter(b"", max_original_bytes=-1)
