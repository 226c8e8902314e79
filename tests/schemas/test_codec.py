"""Decoding: every input gives an event or a typed InvalidEvent, with what could be salvaged."""

from __future__ import annotations

import random

import msgspec
import pytest

import schemas
from schemas import ErrorCode, InvalidEvent, ReplyAddress


def _request(**fields) -> bytes:
    body = {"kind": "request", "request_id": "r-1", "prompt": "hello"}
    body.update(fields)
    return msgspec.json.encode(body)


def test_round_trip_every_event():
    events = [
        schemas.InferenceRequest(
            request_id="a.b:c-1",
            prompt="héllo ✓",
            adapter_id="org/sent-v2",
            params=schemas.SamplingParams(max_new_tokens=5, temperature=0.7, stop=["\n"], seed=3),
            reply_to=ReplyAddress("replies.x", 0),
            deadline_ms=123,
        ),
        schemas.TokenChunk(request_id="r", attempt=1, seq=2, text="ab", token_ids=[1, 2]),
        schemas.Final(request_id="r", attempt=0, seq=3, finish_reason=schemas.FinishReason.EOS, text="x"),
        schemas.Error(request_id="r", attempt=0, seq=0, code=ErrorCode.EXPIRED, message="late"),
        schemas.TrainingRequest(job_id="j1", adapter_id="a", dataset=schemas.DatasetRef(uri="/d.jsonl")),
        schemas.TrainingEvent(job_id="j1", state=schemas.JobState.PROGRESS, ts_ms=1, step=3, loss=0.5),
        schemas.AdapterEvent(adapter_id="a", version=2, uri="file:///x", checksum="ab" * 32),
        schemas.DeadLetter(
            source_topic="t", partition=0, offset=5, code=ErrorCode.MALFORMED, reason="r", original=b"\xff"
        ),
        schemas.CancelRequest(request_id="r"),
    ]
    for event in events:
        assert schemas.decode(schemas.encode(event), type(event)) == event
    for reply in events[1:4]:
        assert schemas.decode_reply(schemas.encode(reply)) == reply


@pytest.mark.parametrize(
    ("raw", "code", "request_id"),
    [
        (b"\xff\xfe\x00", ErrorCode.MALFORMED, None),
        (b"", ErrorCode.MALFORMED, None),
        (b"[1,2]", ErrorCode.INVALID_REQUEST, None),
        (b'{"kind":"request","prompt":"x"}', ErrorCode.INVALID_REQUEST, None),
        (_request(prompt=7), ErrorCode.INVALID_REQUEST, "r-1"),
        (_request(adapter_id="../etc/passwd"), ErrorCode.INVALID_REQUEST, "r-1"),
        (_request(adapter_id="/abs"), ErrorCode.INVALID_REQUEST, "r-1"),
        (_request(adapter_id="a" * 129), ErrorCode.INVALID_REQUEST, "r-1"),
        (_request(adapter_id="bad id"), ErrorCode.INVALID_REQUEST, "r-1"),
        (_request(adapter_id=""), ErrorCode.INVALID_REQUEST, "r-1"),
        (_request(prompt="é" * 40_000), ErrorCode.INVALID_REQUEST, "r-1"),
        (_request(params={"max_new_tokens": 0}), ErrorCode.INVALID_REQUEST, "r-1"),
        (_request(params={"max_new_tokens": 100_000}), ErrorCode.INVALID_REQUEST, "r-1"),
        (_request(params={"top_p": 0}), ErrorCode.INVALID_REQUEST, "r-1"),
        (_request(params={"temperature": -1}), ErrorCode.INVALID_REQUEST, "r-1"),
        (_request(params={"stop": ["x"] * 9}), ErrorCode.INVALID_REQUEST, "r-1"),
        (_request(schema_version=99), ErrorCode.UNSUPPORTED_VERSION, "r-1"),
        (_request(request_id="has space"), ErrorCode.INVALID_REQUEST, None),
        (_request(kind="final"), ErrorCode.INVALID_REQUEST, "r-1"),
        (b"{" * 10_000, ErrorCode.MALFORMED, None),
    ],
)
def test_bad_requests_are_typed(raw, code, request_id):
    with pytest.raises(InvalidEvent) as info:
        schemas.decode_request(raw)
    assert info.value.code is code
    assert info.value.request_id == request_id
    assert info.value.message


def test_reply_address_is_salvaged_only_when_valid():
    with pytest.raises(InvalidEvent) as info:
        schemas.decode_request(_request(prompt=None, reply_to={"topic": "rep", "partition": 2}))
    assert info.value.reply_to == ReplyAddress("rep", 2)
    with pytest.raises(InvalidEvent) as info:
        schemas.decode_request(_request(prompt=None, reply_to={"topic": "bad topic!"}))
    assert info.value.reply_to is None


def test_adapter_id_limits_accept_the_documented_alphabet():
    ok = ["a", "A.b_c-d/e", "x" * 128, "org/name.v1"]
    for adapter_id in ok:
        assert schemas.decode_request(_request(adapter_id=adapter_id)).adapter_id == adapter_id


def test_fuzzed_bytes_never_escape_as_other_exceptions():
    rng = random.Random(7)
    good = _request(reply_to={"topic": "t"}, params={"max_new_tokens": 3})
    for _ in range(3000):
        data = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            op = rng.random()
            pos = rng.randrange(len(data) + 1)
            if op < 0.4 and data:
                data[min(pos, len(data) - 1)] = rng.randrange(256)
            elif op < 0.7:
                data.insert(pos, rng.randrange(256))
            elif data:
                del data[min(pos, len(data) - 1)]
        try:
            event = schemas.decode_request(bytes(data))
        except InvalidEvent as exc:
            assert isinstance(exc.code, ErrorCode)
        else:
            assert isinstance(event, schemas.InferenceRequest)


def test_training_hyperparameters_leave_size_dependent_settings_to_the_worker():
    hp = schemas.Hyperparameters()
    assert (hp.r, hp.alpha, hp.target_modules, hp.learning_rate, hp.epochs, hp.max_seq_len) == (None,) * 6
    assert hp.dropout == 0.05
    assert (hp.lr_scheduler, hp.warmup_ratio, hp.effective_batch_size) == ("cosine", 0.03, 16)
    bad = msgspec.json.encode(
        {"kind": "train", "job_id": "j", "adapter_id": "a", "dataset": {}, "hyperparameters": {"r": 0}}
    )
    with pytest.raises(InvalidEvent) as info:
        schemas.decode_training_request(bad)
    assert info.value.code is ErrorCode.INVALID_REQUEST


def test_chunk_batches_decode_as_replies_and_are_opt_in():
    chunks = [schemas.TokenChunk("r1", 0, 0, "he", [1]), schemas.TokenChunk("r2", 1, 3, "llo", [2, 3])]
    batch = schemas.decode_reply(schemas.encode(schemas.ChunkBatch(chunks)))
    assert isinstance(batch, schemas.ChunkBatch) and batch.chunks == chunks
    with pytest.raises(InvalidEvent):
        schemas.decode_reply(b'{"kind":"chunks","chunks":[]}')
    # a request from a client that predates batches does not ask for them
    old = schemas.decode_request(b'{"kind":"request","request_id":"r1","prompt":"hi"}')
    assert old.batch_chunks is False


@pytest.mark.parametrize(
    "raw",
    [
        _request(params={"top_p": 0}),
        msgspec.json.encode({"kind": "train", "job_id": "j", "adapter_id": "a", "dataset": {"uri": "/d.jsonl"},
                             "hyperparameters": {"learning_rate": 0}}),
        msgspec.json.encode({"kind": "train", "job_id": "j", "adapter_id": "a", "dataset": {"uri": "/d.jsonl"},
                             "hyperparameters": {"alpha": 0.0, "epochs": 0}}),
    ],
)
def test_positive_bounds_hold_when_denormals_are_flushed(raw):
    """torch.set_flush_denormal (bench/engine.py) or a fast-math library turns on FTZ/DAZ for the whole
    process; msgspec's `gt=0` then let 0 through (seen after the training benchmark ran in the suite)."""
    torch = pytest.importorskip("torch")
    assert torch.set_flush_denormal(True)
    try:
        assert not 5e-324 > 0.0  # the mode is on: the smallest subnormal reads as zero
        with pytest.raises(InvalidEvent) as info:
            schemas.decode(raw, schemas.InferenceRequest | schemas.TrainingRequest)
        assert info.value.code is ErrorCode.INVALID_REQUEST
    finally:
        torch.set_flush_denormal(False)
