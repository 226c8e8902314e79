"""Reply dedup and demux: each piece of an answer reaches the user exactly once."""

from __future__ import annotations

import pytest

from schemas import Error, ErrorCode, Final, FinishReason, ReplyRecord, TokenChunk
from streamer import ReplyDedup, ReplyDemux

RID = "req-1"


def chunk(attempt: int, seq: int, text: str, ids: list[int] | None = None) -> TokenChunk:
    return TokenChunk(RID, attempt, seq, text, ids if ids is not None else [ord(c) for c in text])


def final(attempt: int, seq: int, text: str) -> Final:
    return Final(RID, attempt, seq, FinishReason.LENGTH, text)


def error(attempt: int, seq: int) -> Error:
    return Error(RID, attempt, seq, ErrorCode.INTERNAL, "boom")


def delivered(records: list[ReplyRecord]) -> list[str]:
    """What the user sees: chunk texts, then "<final:TEXT>" / "<error>"."""
    dedup = ReplyDedup()
    out = []
    for record in records:
        fresh = dedup.accept(record)
        if isinstance(fresh, TokenChunk):
            out.append(fresh.text)
        elif isinstance(fresh, Final):
            out.append(f"<final:{fresh.text}>")
        elif isinstance(fresh, Error):
            out.append("<error>")
    return out


CASES = {
    "in order": (
        [chunk(0, 0, "Hel"), chunk(0, 1, "lo"), final(0, 2, "Hello")],
        ["Hel", "lo", "<final:Hello>"],
    ),
    "duplicate chunk and final": (
        [
            chunk(0, 0, "Hel"),
            chunk(0, 0, "Hel"),
            chunk(0, 1, "lo"),
            final(0, 2, "Hello"),
            final(0, 2, "Hello"),
        ],
        ["Hel", "lo", "<final:Hello>"],
    ),
    "retry re-serves from the start: prefix suppressed": (
        [
            chunk(0, 0, "Hel"),
            chunk(0, 1, "lo w"),
            chunk(1, 0, "Hello"),
            chunk(1, 1, " world"),
            final(1, 2, "Hello world"),
        ],
        ["Hel", "lo w", "orld", "<final:Hello world>"],
    ),
    "superseded attempt's late records dropped": (
        [
            chunk(0, 0, "Hel"),
            chunk(1, 0, "Hel"),
            chunk(0, 1, "lo"),
            chunk(1, 1, "p!"),
            final(0, 2, "Hello"),
            final(1, 2, "Help!"),
        ],
        ["Hel", "p!", "<final:Help!>"],
    ),
    "retry shorter than what was delivered": (
        [
            chunk(0, 0, "abcdef"),
            chunk(1, 0, "abc"),
            chunk(1, 1, "def"),
            chunk(1, 2, "g"),
            final(1, 3, "abcdefg"),
        ],
        ["abcdef", "g", "<final:abcdefg>"],
    ),
    "retry before anything was delivered": (
        [chunk(1, 0, "ab"), final(1, 1, "ab")],
        ["ab", "<final:ab>"],
    ),
    "attempt jumps twice": (
        [
            chunk(0, 0, "a"),
            chunk(2, 0, "ab"),
            chunk(1, 0, "abc"),
            chunk(2, 1, "c"),
            final(2, 2, "abc"),
        ],
        ["a", "b", "c", "<final:abc>"],
    ),
    "records after the final ignored": (
        [final(0, 0, "x"), chunk(0, 1, "y"), final(1, 0, "z"), error(2, 0)],
        ["<final:x>"],
    ),
    "error ends the answer": (
        [chunk(0, 0, "a"), error(0, 1), chunk(0, 2, "b"), final(0, 3, "ab")],
        ["a", "<error>"],
    ),
    "error of a superseded attempt dropped": (
        [chunk(1, 0, "a"), error(0, 5), final(1, 1, "a")],
        ["a", "<final:a>"],
    ),
    "gap in seq still delivered, older seq then dropped": (
        [chunk(0, 0, "a"), chunk(0, 2, "c"), chunk(0, 1, "b"), final(0, 3, "abc")],
        ["a", "c", "<final:abc>"],
    ),
}


@pytest.mark.parametrize("records, expected", CASES.values(), ids=CASES.keys())
def test_dedup(records: list[ReplyRecord], expected: list[str]) -> None:
    assert delivered(records) == expected


def test_token_ids_are_trimmed_like_text() -> None:
    dedup = ReplyDedup()
    assert dedup.accept(chunk(0, 0, "ab", [1, 2])) is not None
    retried = dedup.accept(chunk(1, 0, "abc", [1, 2, 3]))
    assert isinstance(retried, TokenChunk)
    assert (retried.text, retried.token_ids, retried.seq) == ("c", [3], 0)
    assert (dedup.num_chars_delivered, dedup.num_tokens_delivered) == (3, 3)


TOKEN_A, TOKEN_B = "token-of-a-0123456789", "token-of-b-0123456789"


def test_demux_routes_by_request_id_and_ignores_unknown() -> None:
    demux = ReplyDemux()
    got: dict[str, list[object]] = {"a": [], "b": []}
    demux.register("a", TOKEN_A, got["a"].append)
    demux.register("b", TOKEN_B, got["b"].append)
    records = [
        TokenChunk("a", 0, 0, "x", reply_token=TOKEN_A),
        TokenChunk("b", 0, 0, "y", reply_token=TOKEN_B),
        TokenChunk("zzz", 0, 0, "?", reply_token=TOKEN_A),  # another client's request on a shared partition
        TokenChunk("a", 0, 0, "x", reply_token=TOKEN_A),  # duplicate
        Final("a", 0, 1, FinishReason.EOS, "x", reply_token=TOKEN_A),
        Final("a", 0, 1, FinishReason.EOS, "x", reply_token=TOKEN_A),  # after the final: unknown again
    ]
    results = [demux.dispatch(r) for r in records]
    assert results == [True, True, False, False, True, False]
    assert [r.text for r in got["a"]] == ["x", "x"]  # chunk text, final text
    assert isinstance(got["a"][-1], Final)
    assert [r.text for r in got["b"]] == ["y"]
    assert "a" not in demux and "b" in demux and len(demux) == 1
    assert (demux.num_ignored, demux.num_dropped, demux.num_forged) == (2, 1, 0)


def test_demux_refuses_a_second_waiter_and_unregisters() -> None:
    demux = ReplyDemux()
    demux.register("a", TOKEN_A, lambda record: None)
    with pytest.raises(ValueError):
        demux.register("a", TOKEN_A, lambda record: None)
    with pytest.raises(ValueError):
        demux.register("b", "", lambda record: None)
    assert demux.unregister("a") is True
    assert demux.unregister("a") is False
    assert demux.dispatch(TokenChunk("a", 0, 0, "late", reply_token=TOKEN_A)) is False


FORGED = {
    "no token": None,
    "another request's token": TOKEN_B,
    "the token with a different case": TOKEN_A.upper(),
}


@pytest.mark.parametrize("forged_token", FORGED.values(), ids=FORGED.keys())
def test_a_forged_answer_with_a_higher_attempt_never_outranks_the_real_one(forged_token) -> None:
    """A writer who knows the request_id but not its reply_token sends attempt 1000 first."""
    demux = ReplyDemux()
    got: list[object] = []
    demux.register(RID, TOKEN_A, got.append)
    forged = [
        Error(RID, 1000, 0, ErrorCode.INTERNAL, "forged", reply_token=forged_token),
        TokenChunk(RID, 1000, 0, "forged text", reply_token=forged_token),
        Final(RID, 1000, 1, FinishReason.EOS, "forged text", reply_token=forged_token),
    ]
    real = [
        TokenChunk(RID, 0, 0, "real", reply_token=TOKEN_A),
        Final(RID, 0, 1, FinishReason.EOS, "real", reply_token=TOKEN_A),
    ]
    delivered = [demux.dispatch(record) for record in [*forged, *real]]
    assert delivered == [False, False, False, True, True]
    assert [type(r).__name__ for r in got] == ["TokenChunk", "Final"]
    assert got[-1].text == "real" and got[-1].attempt == 0
    assert (demux.num_forged, demux.num_dropped, len(demux)) == (3, 0, 0)
