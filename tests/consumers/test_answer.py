"""Answer bookkeeping: chunk sequence numbers, final text and usage, timings order."""

from __future__ import annotations

import pytest

from consumers.inference.answer import Answer, derived_seed
from consumers.config import ServeConfig
from streamer.epochs import format_epoch, parse_epoch
from schemas import ErrorCode, FinishReason, InferenceRequest


def _answer(attempt: int = 0) -> Answer:
    return Answer(InferenceRequest(request_id="r1", prompt="p", adapter_id="a"), b"raw", "t", 0, 5, attempt)


def test_chunks_then_final_number_records_consecutively():
    answer = _answer(attempt=2)
    answer.add("He", (1,))
    answer.add("llo", (2, 3))
    first = answer.take_chunk()
    assert (first.seq, first.attempt, first.text, first.token_ids) == (0, 2, "Hello", [1, 2, 3])
    assert not answer.has_pending
    answer.add(" world", (4,))
    second = answer.take_chunk()
    assert (second.seq, second.text) == (1, " world")
    answer.prompt_tokens = 7
    final = answer.final(FinishReason.LENGTH)
    assert (final.seq, final.text, final.adapter_id) == (2, "Hello world", "a")
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (7, 4)
    t = final.timings
    assert 0 <= t.queue_ms <= t.total_ms and 0 <= t.ttft_ms <= t.total_ms


def test_error_takes_the_next_seq():
    answer = _answer()
    answer.add("x", (9,))
    answer.take_chunk()
    error = answer.error(ErrorCode.EXPIRED, "late")
    assert (error.seq, error.code, error.message) == (1, ErrorCode.EXPIRED, "late")


def test_derived_seed_is_stable_and_distinct():
    assert derived_seed("abc") == derived_seed("abc")
    assert derived_seed("abc") != derived_seed("abd")
    assert 0 <= derived_seed("abc") < 2**63


@pytest.mark.parametrize(
    ("metadata", "epoch"),
    [(None, 0), ("", 0), ("epoch=3", 3), ("epoch=-2", 0), ("epoch=x", 0), ("other", 0), (format_epoch(12), 12)],
)
def test_epoch_metadata(metadata, epoch):
    assert parse_epoch(metadata) == epoch


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(group_id=""),
        dict(max_inflight=0),
        dict(max_inflight=10, resume_below=11),
        dict(chunk_max_tokens=0),
        dict(chunk_flush_ms=-1),
        dict(commit_interval_ms=0),
        dict(metrics_port=70000),
        dict(request_partitions=0),
    ],
)
def test_serve_config_rejects(kwargs):
    with pytest.raises(ValueError):
        ServeConfig(**kwargs)


def test_every_answer_record_echoes_the_reply_token_and_errors_are_clipped():
    from schemas.limits import MAX_MESSAGE_CHARS

    token = "t0k3n-abcdefghijklmnop"
    request = InferenceRequest(request_id="r1", prompt="p", reply_token=token)
    answer = Answer(request, b"raw", "t", 0, 5, 0)
    answer.add("x", (1,))
    records = [answer.take_chunk(), answer.final(FinishReason.EOS), answer.error(ErrorCode.INTERNAL, "m" * 10_000)]
    assert [r.reply_token for r in records] == [token] * 3
    assert len(records[-1].message) <= MAX_MESSAGE_CHARS
