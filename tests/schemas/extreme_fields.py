"""Extreme values for every field of every event kind, for the unit table and the Kafka test.

Each event kind has a valid body that sets every field. For every field (nested ones included) the
cases are derived from the field's declared type: wrong JSON types, 400-digit integers, `1e999`,
NaN, strings and lists far past any limit, and each bound plus one. Every case must decode to
InvalidEvent with its code, whatever the field; a field added later gets its cases by itself.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
from msgspec import inspect as mi

import schemas
from schemas import ErrorCode
from schemas.limits import MAX_EPOCH_MS, MAX_SEED

Path = tuple[str | int, ...]

TOKEN = "a-valid-reply-token-0123"
CHECKSUM = "0123456789abcdef" * 4

_SCORES = {
    "decision": "kept", "rule": "beat_served", "margin_points": 5.0, "task": "sentiment", "metric": "accuracy",
    "num_examples": 100, "candidate": 61.0, "base": 55.0, "served": 70.0, "served_version": 2, "reason": "kept",
}  # fmt: skip

_CHUNK = {
    "kind": "chunk", "request_id": "r-1", "attempt": 0, "seq": 0, "text": "hi", "token_ids": [1, 2],
    "reply_token": TOKEN, "schema_version": 1,
}  # fmt: skip

# a valid body per event kind, every optional field set (so every field has a path and a sample)
BODIES: dict[type, dict[str, Any]] = {
    schemas.InferenceRequest: {
        "kind": "request", "request_id": "r-1", "prompt": "hello", "adapter_id": "acme/sentiment",
        "params": {"max_new_tokens": 3, "temperature": 0.5, "top_p": 0.9, "top_k": 5, "stop": ["\n"],
                   "seed": 7, "ignore_eos": False},
        "reply_to": {"topic": "lorastream.replies.c1", "partition": 0},
        "deadline_ms": 2_000_000_000_000, "priority": 1, "attempt": 0, "created_ms": 1_700_000_000_000,
        "stream": True, "batch_chunks": False, "reply_token": TOKEN, "base": "tiny-llama", "schema_version": 1,
    },
    schemas.CancelRequest: {"kind": "cancel", "request_id": "r-1", "schema_version": 1},
    schemas.CancelJob: {"kind": "cancel_job", "job_id": "j-1", "schema_version": 1},
    schemas.AdapterEvent: {
        "kind": "adapter", "adapter_id": "acme/sentiment", "version": 3, "uri": "file:///adapters/x",
        "checksum": CHECKSUM, "base_model": "tiny-llama", "rank": 8, "deleted": False,
        "ts_ms": 1_700_000_000_000, "revision": 4, "release": _SCORES, "schema_version": 1,
    },
    schemas.TrainingRequest: {
        "kind": "train", "job_id": "j-1", "adapter_id": "acme/new",
        "dataset": {"uri": "/data/train.jsonl", "task": "sentiment", "prompt_field": "prompt",
                    "completion_field": "completion"},
        "base_model": "tiny-llama",
        "hyperparameters": {
            "r": 8, "alpha": 16.0, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"],
            "learning_rate": 2e-4, "lr_scheduler": "cosine", "warmup_ratio": 0.03,
            "effective_batch_size": 16, "micro_batch_size": 4, "max_steps": 10, "epochs": 1.0,
            "max_seq_len": 512, "seed": 3, "quantize": "none",
        },
        "overwrite": False, "attempt": 0,
        "evaluation": {"task": "sentiment", "test_uri": "/data/test.jsonl", "held_out": False, "metric": "accuracy",
                       "max_examples": 50, "max_new_tokens": 8},
        "release": {"rule": "beat_base", "margin_points": 5.0}, "schema_version": 1,
    },
    schemas.TokenChunk: _CHUNK,
    schemas.ChunkBatch: {"kind": "chunks", "chunks": [_CHUNK], "schema_version": 1},
    schemas.Final: {
        "kind": "final", "request_id": "r-1", "attempt": 2, "seq": 1, "finish_reason": "eos",
        "text": "hi", "adapter_id": "acme/sentiment",
        "usage": {"prompt_tokens": 3, "completion_tokens": 2},
        "timings": {"queue_ms": 1.0, "ttft_ms": 2.0, "total_ms": 3.0},
        "served_by": "node-a", "reply_token": TOKEN, "request_sha256": "0" * 64,
        "lineage": {"base_name": "tiny-llama", "base_sha256": CHECKSUM, "adapter_id": "acme/sentiment",
                    "adapter_version": 3, "adapter_checksum": CHECKSUM, "seed": 7,
                    "params": {"max_new_tokens": 3, "temperature": 0.5, "top_p": 0.9, "top_k": 5,
                               "stop": ["\n"], "seed": 7, "ignore_eos": False},
                    "engine_version": "0.1.0", "served_by": "node-a"},
        "schema_version": 1,
    },
    schemas.Error: {
        "kind": "error", "request_id": "r-1", "attempt": 0, "seq": 0, "code": "internal",
        "message": "boom", "served_by": "node-a", "reply_token": TOKEN, "request_sha256": "", "schema_version": 1,
    },
    schemas.TrainingEvent: {
        "kind": "training_event", "job_id": "j-1", "state": "completed", "ts_ms": 1_700_000_000_000,
        "attempt": 0, "step": 5, "total_steps": 10, "loss": 0.5, "eval_loss": 0.6,
        "learning_rate": 1e-4, "tokens_per_s": 100.0, "eta_s": 1.0, "quantization": "none",
        "adapter_id": "acme/new", "adapter_uri": "file:///adapters/acme/new", "checksum": CHECKSUM,
        "metrics": {"steps": 10.0}, "code": "internal", "reason": "why", "notice": "chosen",
        "adapter_version": 2, "release": _SCORES, "schema_version": 1,
    },
}  # fmt: skip

# a request has a prompt or chat messages, never both: the cases of `messages` start from this body
CHAT_REQUEST = {
    **{key: value for key, value in BODIES[schemas.InferenceRequest].items() if key != "prompt"},
    "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
}
_BASE_BODIES: dict[tuple[type, str], dict[str, Any]] = {(schemas.InferenceRequest, "messages"): CHAT_REQUEST}

DECODERS: dict[type, Callable[[bytes], object]] = {
    schemas.InferenceRequest: schemas.decode_request,
    schemas.CancelRequest: schemas.decode_control,
    schemas.CancelJob: schemas.decode_control,
    schemas.AdapterEvent: schemas.decode_adapter_event,
    schemas.TrainingRequest: schemas.decode_training_request,
    schemas.TokenChunk: schemas.decode_reply,
    schemas.ChunkBatch: schemas.decode_reply,
    schemas.Final: schemas.decode_reply,
    schemas.Error: schemas.decode_reply,
    schemas.TrainingEvent: schemas.decode_training_event,
}

_BIG_DIGITS = b"1" + b"0" * 400  # 10**400: past every int64, fits no field
_LONG_CHARS = 100_000
_LONG_ITEMS = 10_000


@dataclass(frozen=True)
class Case:
    """`kind`'s valid body with the value at `path` replaced by `value` (a msgspec.Raw is sent
    as it is: `1e999`, `NaN`, 400-digit numbers)."""

    kind: type
    path: Path
    label: str
    value: Any
    code: ErrorCode = ErrorCode.INVALID_REQUEST
    base: dict[str, Any] | None = None  # the valid body it changes (default BODIES[kind])

    @property
    def id(self) -> str:
        return f"{self.kind.__name__}.{'.'.join(map(str, self.path))}={self.label}"

    def body(self, **overrides: Any) -> dict[str, Any]:
        """The body with top-level `overrides` applied first (request_id, reply_to, …)."""
        body = copy.deepcopy({**(self.base or BODIES[self.kind]), **overrides})
        _set(body, self.path, self.value)
        return body

    def encode(self, **overrides: Any) -> bytes:
        return msgspec.json.encode(self.body(**overrides))


def all_cases() -> list[Case]:
    return [case for kind in BODIES for case in cases_for(kind)]


def cases_for(kind: type) -> list[Case]:
    body = BODIES[kind]
    cases = [Case(kind, ("kind",), "wrong-tag", "x" * _LONG_CHARS), Case(kind, ("kind",), "int-tag", 7)]
    for path, info in walk(kind):
        base = _BASE_BODIES.get((kind, str(path[0])))
        sample = _get(base or body, path)
        cases += [Case(kind, path, label, value, code, base) for label, value, code in _extremes(info, sample)]
    return cases


def walk(kind: type) -> Iterator[tuple[Path, mi.Type]]:
    """(path, declared type) of every field of `kind`, nested structs and list items included."""
    yield from _walk_struct(mi.type_info(kind), ())


def _walk_struct(info: mi.StructType, prefix: Path) -> Iterator[tuple[Path, mi.Type]]:
    for field in info.fields:
        path = (*prefix, field.encode_name)
        yield path, field.type
        inner = _without_none(field.type)
        if isinstance(inner, mi.StructType):
            yield from _walk_struct(inner, path)
        elif isinstance(inner, mi.ListType) and isinstance(inner.item_type, mi.StructType):
            yield from _walk_struct(inner.item_type, (*path, 0))


def _extremes(info: mi.Type, sample: Any) -> Iterator[tuple[str, Any, ErrorCode]]:
    optional = isinstance(info, mi.UnionType) and any(isinstance(t, mi.NoneType) for t in info.types)
    info = _without_none(info)
    invalid = ErrorCode.INVALID_REQUEST
    if not optional:
        yield "null", None, invalid
    if not isinstance(info, (mi.IntType, mi.FloatType)):
        yield "10**400", msgspec.Raw(_BIG_DIGITS), invalid
    if isinstance(info, mi.IntType):
        yield "10**400", msgspec.Raw(_BIG_DIGITS), invalid
        yield "-10**400", msgspec.Raw(b"-" + _BIG_DIGITS), invalid
        yield "float", 1.5, invalid
        yield "string", "1", invalid
        yield "bool", True, invalid
        if info.le is not None or info.lt is not None:
            yield "max+1", info.le + 1 if info.le is not None else info.lt, invalid
        if info.ge is not None or info.gt is not None:
            yield "min-1", info.ge - 1 if info.ge is not None else info.gt, invalid
    elif isinstance(info, mi.FloatType):
        yield "1e999", msgspec.Raw(b"1e999"), invalid
        yield "-1e999", msgspec.Raw(b"-1e999"), invalid
        yield "400-digit", msgspec.Raw(_BIG_DIGITS), invalid
        yield "NaN", msgspec.Raw(b"NaN"), ErrorCode.MALFORMED
        yield "Infinity", msgspec.Raw(b"Infinity"), ErrorCode.MALFORMED
        yield "string", "1.0", invalid
        if info.le is not None or info.lt is not None:
            yield "max+1", (info.le if info.le is not None else info.lt) + 1, invalid
        if info.ge is not None or info.gt is not None:
            yield "min-1", (info.ge if info.ge is not None else info.gt) - 1, invalid
    elif isinstance(info, (mi.StrType, mi.EnumType)):
        char = sample[0] if isinstance(sample, str) and sample else "x"
        yield "long", char * max(_LONG_CHARS, (getattr(info, "max_length", None) or 0) + 1), invalid
        yield "int", 7, invalid
        yield "list", [sample], invalid
        if getattr(info, "pattern", None) and sample:
            yield "trailing-newline", f"{sample}\n", invalid
            yield "nul", f"{sample}\x00", invalid
    elif isinstance(info, mi.ListType):
        yield "long", [sample[0]] * max(_LONG_ITEMS, (info.max_length or 0) + 1), invalid
        yield "bad-items", [msgspec.Raw(_BIG_DIGITS)], invalid
        yield "string", "x", invalid
    elif isinstance(info, mi.DictType):
        key, value = next(iter(sample.items()))
        yield "many", {f"k{i}": value for i in range(max(_LONG_ITEMS, (info.max_length or 0) + 1))}, invalid
        yield "long-key", {"k" * _LONG_CHARS: value}, invalid
        yield "bad-value", {key: msgspec.Raw(b"1e999")}, invalid
        yield "list", [], invalid
    elif isinstance(info, mi.BoolType):
        yield "int", 1, invalid
        yield "string", "true", invalid
    elif isinstance(info, mi.StructType):
        yield "string", "x" * _LONG_CHARS, invalid
        yield "list", [], invalid
    else:
        raise TypeError(f"no extremes for {info!r}: teach extreme_fields this type")


def _without_none(info: mi.Type) -> mi.Type:
    if isinstance(info, mi.UnionType):
        others = [t for t in info.types if not isinstance(t, mi.NoneType)]
        if len(others) == 1:
            return others[0]
    return info


def _get(body: Any, path: Path) -> Any:
    for key in path:
        body = body[key]
    return body


def _set(body: Any, path: Path, value: Any) -> None:
    *parents, last = path
    _get(body, tuple(parents))[last] = value


# extreme values that are still valid: each must decode, and be served (see the Kafka test)
VALID_EXTREMES: list[tuple[str, dict[str, Any]]] = [
    ("deadline at year 9999", {"deadline_ms": MAX_EPOCH_MS}),
    ("created at year 9999", {"created_ms": MAX_EPOCH_MS}),
    ("largest seed", {"params": {"max_new_tokens": 3, "temperature": 1.0, "seed": MAX_SEED}}),
    ("seed 0", {"params": {"max_new_tokens": 3, "temperature": 1.0, "seed": 0}}),
    ("lowest priority", {"priority": -100}),
    ("highest priority, attempt 1000", {"priority": 100, "attempt": 1000}),
    ("top_k at its limit", {"params": {"max_new_tokens": 3, "temperature": 1.0, "top_k": 1000}}),
    ("eight stop strings of 64 chars", {"params": {"max_new_tokens": 3, "stop": ["§" * 64] * 8}}),
]
