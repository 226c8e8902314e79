"""Every field of every event kind is bounded at decode: extreme values give a typed InvalidEvent,
never another exception, and the largest valid values still decode."""

from __future__ import annotations

import msgspec
import pytest
from msgspec import inspect as mi

import schemas
from schemas import ErrorCode, InvalidEvent, ReplyAddress
from schemas.limits import MAX_ADAPTER_VERSION, MAX_EPOCH_MS, MAX_MESSAGE_CHARS, MAX_SEED, clip_message
from tests.schemas.extreme_fields import BODIES, DECODERS, TOKEN, VALID_EXTREMES, Case, all_cases, walk

CASES = all_cases()


@pytest.mark.parametrize("kind", BODIES, ids=lambda kind: kind.__name__)
def test_every_valid_body_decodes_to_its_kind(kind: type) -> None:
    event = DECODERS[kind](msgspec.json.encode(BODIES[kind]))
    assert type(event) is kind
    assert DECODERS[kind](schemas.encode(event)) == event


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_extreme_value_is_refused_with_its_code(case: Case) -> None:
    with pytest.raises(InvalidEvent) as info:
        DECODERS[case.kind](case.encode())
    assert info.value.code is case.code, info.value.message
    assert info.value.message


@pytest.mark.parametrize("kind", BODIES, ids=lambda kind: kind.__name__)
def test_every_field_declares_its_bounds(kind: type) -> None:
    """Ints bounded on both sides, strings by length or an anchored pattern, lists and maps by size."""
    unbounded = []
    for path, info in walk(kind):
        for t in info.types if isinstance(info, mi.UnionType) else (info,):
            if isinstance(t, mi.IntType):
                bounded = (t.ge, t.gt) != (None, None) and (t.le, t.lt) != (None, None)
            elif isinstance(t, mi.StrType):
                bounded = t.max_length is not None or (t.pattern or "").endswith("\\Z")
            elif isinstance(t, (mi.ListType, mi.DictType)):
                bounded = t.max_length is not None
            else:  # bool, enum, struct, None; floats are finite by JSON
                bounded = True
            if not bounded:
                unbounded.append(".".join(map(str, path)))
    assert unbounded == []


# the limits chosen for the rows of issue 20, stated one by one
def _case(kind: type, path: tuple, value) -> Case:
    return Case(kind, path, "", value)


HEADLINE = {
    "deadline_ms of 400 digits": _case(schemas.InferenceRequest, ("deadline_ms",), msgspec.Raw(b"9" * 400)),
    "deadline_ms past year 9999": _case(schemas.InferenceRequest, ("deadline_ms",), MAX_EPOCH_MS + 1),
    "created_ms negative": _case(schemas.InferenceRequest, ("created_ms",), -1),
    "priority 2**63": _case(schemas.InferenceRequest, ("priority",), 2**63),
    "attempt 1001": _case(schemas.InferenceRequest, ("attempt",), 1001),
    "seed negative": _case(schemas.InferenceRequest, ("params", "seed"), -1),
    "seed 2**63": _case(schemas.InferenceRequest, ("params", "seed"), MAX_SEED + 1),
    "top_k 10**400": _case(schemas.InferenceRequest, ("params", "top_k"), msgspec.Raw(b"1" + b"0" * 400)),
    "temperature 1e999": _case(schemas.InferenceRequest, ("params", "temperature"), msgspec.Raw(b"1e999")),
    "nine stop strings": _case(schemas.InferenceRequest, ("params", "stop"), ["x"] * 9),
    "reply partition 2**31": _case(schemas.InferenceRequest, ("reply_to", "partition"), 2**31),
    "request_id with a trailing newline": _case(schemas.InferenceRequest, ("request_id",), "r-1\n"),
    "adapter_id with a trailing newline": _case(schemas.InferenceRequest, ("adapter_id",), "acme/a\n"),
    "reply_token too short": _case(schemas.InferenceRequest, ("reply_token",), "short"),
    "reply_token not urlsafe": _case(schemas.InferenceRequest, ("reply_token",), "a/b+c=" * 4),
    "training attempt 10**400": _case(schemas.TrainingRequest, ("attempt",), msgspec.Raw(b"1" + b"0" * 400)),
    "max_steps past a million": _case(schemas.TrainingRequest, ("hyperparameters", "max_steps"), 1_000_001),
    "alpha past 4096": _case(schemas.TrainingRequest, ("hyperparameters", "alpha"), 4097.0),
    "training seed 2**64": _case(schemas.TrainingRequest, ("hyperparameters", "seed"), 2**64),
    "dataset uri with a NUL": _case(schemas.TrainingRequest, ("dataset", "uri"), "/data/x\x00.jsonl"),
    "dataset uri of 2049 chars": _case(schemas.TrainingRequest, ("dataset", "uri"), "/" * 2049),
    "dataset field name with a space": _case(schemas.TrainingRequest, ("dataset", "prompt_field"), "a b"),
    "base_model with a space": _case(schemas.TrainingRequest, ("base_model",), "tiny llama"),
    "adapter version 2**53+1": _case(schemas.AdapterEvent, ("version",), MAX_ADAPTER_VERSION + 1),
    "adapter version 2**63": _case(schemas.AdapterEvent, ("version",), 2**63),
    "adapter rank 1025": _case(schemas.AdapterEvent, ("rank",), 1025),
    "adapter checksum not hex": _case(schemas.AdapterEvent, ("checksum",), "z" * 64),
    "adapter ts_ms past year 9999": _case(schemas.AdapterEvent, ("ts_ms",), MAX_EPOCH_MS + 1),
    "answer attempt 2**53+1": _case(schemas.Error, ("attempt",), 2**53 + 1),
    "token id 2**31": _case(schemas.TokenChunk, ("token_ids",), [2**31]),
    "65 metrics": _case(schemas.TrainingEvent, ("metrics",), {f"m{i}": 1.0 for i in range(65)}),
}


@pytest.mark.parametrize("case", HEADLINE.values(), ids=HEADLINE.keys())
def test_issue_limits(case: Case) -> None:
    with pytest.raises(InvalidEvent) as info:
        DECODERS[case.kind](case.encode())
    assert info.value.code is ErrorCode.INVALID_REQUEST


@pytest.mark.parametrize(("label", "fields"), VALID_EXTREMES, ids=[label for label, _ in VALID_EXTREMES])
def test_largest_valid_values_still_decode(label: str, fields: dict) -> None:
    body = {**BODIES[schemas.InferenceRequest], **fields}
    assert schemas.decode_request(msgspec.json.encode(body)).request_id == "r-1"


def test_largest_valid_adapter_version_and_training_values_decode() -> None:
    adapter = {**BODIES[schemas.AdapterEvent], "version": MAX_ADAPTER_VERSION, "rank": 1024}
    assert schemas.decode_adapter_event(msgspec.json.encode(adapter)).version == 2**53
    train = BODIES[schemas.TrainingRequest]
    hyper = {**train["hyperparameters"], "max_steps": 1_000_000, "alpha": 4096.0, "seed": MAX_SEED}
    assert schemas.decode_training_request(msgspec.json.encode({**train, "hyperparameters": hyper}))


def test_a_refused_request_keeps_its_reply_token_only_when_valid() -> None:
    body = {**BODIES[schemas.InferenceRequest], "deadline_ms": msgspec.Raw(b"9" * 400)}
    with pytest.raises(InvalidEvent) as info:
        schemas.decode_request(msgspec.json.encode(body))
    assert info.value.reply_token == TOKEN
    assert info.value.reply_to == ReplyAddress("lorastream.replies.c1", 0)
    with pytest.raises(InvalidEvent) as info:
        schemas.decode_request(msgspec.json.encode({**body, "reply_token": "bad token"}))
    assert info.value.reply_token is None and info.value.request_id == "r-1"


SALVAGED = {
    "attempt 10**400 → 0": ({"attempt": msgspec.Raw(b"1" + b"0" * 400)}, ErrorCode.INVALID_REQUEST, 0),
    "attempt 1001 → 0": ({"attempt": 1001}, ErrorCode.INVALID_REQUEST, 0),
    "attempt 7 kept": ({"attempt": 7, "prompt": 1}, ErrorCode.INVALID_REQUEST, 7),
    "version 2 is newer": ({"schema_version": 2}, ErrorCode.UNSUPPORTED_VERSION, 0),
    "version of 4000 digits is garbage": (
        {"schema_version": msgspec.Raw(b"9" * 4000)}, ErrorCode.INVALID_REQUEST, 0,
    ),
}  # fmt: skip


@pytest.mark.parametrize(("fields", "code", "attempt"), SALVAGED.values(), ids=SALVAGED.keys())
def test_salvage_keeps_only_plausible_numbers(fields: dict, code: ErrorCode, attempt: int) -> None:
    with pytest.raises(InvalidEvent) as info:
        schemas.decode_request(msgspec.json.encode({**BODIES[schemas.InferenceRequest], **fields}))
    assert (info.value.code, info.value.attempt) == (code, attempt)
    assert len(info.value.message) < 200


def test_clip_message_keeps_messages_decodable() -> None:
    assert clip_message("short") == "short"
    clipped = clip_message("x" * (MAX_MESSAGE_CHARS + 5))
    assert len(clipped) == MAX_MESSAGE_CHARS and clipped.endswith("…")
    error = schemas.Error("r-1", 0, 0, ErrorCode.INTERNAL, clipped)
    assert schemas.decode_reply(schemas.encode(error)) == error
