"""Bytes ⇄ events. Decoding any bytes gives an event or raises InvalidEvent — nothing else."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

import msgspec

from schemas.adapters import AdapterEvent
from schemas.errors import ErrorCode, InvalidEvent
from schemas.inference import (
    CancelRequest,
    Error,
    Final,
    InferenceRequest,
    ChunkBatch,
    ReplyAddress,
    ReplyWire,
    TokenChunk,
)
from schemas.limits import (
    MAX_ATTEMPT,
    MAX_COUNT,
    REPLY_TOKEN_PATTERN,
    REQUEST_ID_PATTERN,
    SCHEMA_VERSION,
)
from schemas.training import CancelJob, TrainingEvent, TrainingRequest

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
_REQUEST_ID_RE = re.compile(REQUEST_ID_PATTERN)
_REPLY_TOKEN_RE = re.compile(REPLY_TOKEN_PATTERN)


def encode(event: msgspec.Struct) -> bytes:
    """JSON bytes of an event (compact; tagged with its `kind`)."""
    return _encoder.encode(event)


@lru_cache(maxsize=None)
def _decoder(kind: Any) -> msgspec.json.Decoder:
    return msgspec.json.Decoder(kind)


def decode(data: bytes, kind: type[T] | Any) -> T:
    """Decode `data` as `kind` (a Struct type or a union of them); raises InvalidEvent."""
    try:
        event = _decoder(kind).decode(data)
    except msgspec.ValidationError as exc:
        _raise_invalid(data, ErrorCode.INVALID_REQUEST, str(exc))
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, ValueError, TypeError) as exc:
        _raise_invalid(data, ErrorCode.MALFORMED, str(exc) or type(exc).__name__)
    _check_positive(data, event)
    version = getattr(event, "schema_version", SCHEMA_VERSION)
    if version > SCHEMA_VERSION:
        _raise_invalid(
            data,
            ErrorCode.UNSUPPORTED_VERSION,
            f"schema_version {version} is newer than supported {SCHEMA_VERSION}",
        )
    return event


def _check_positive(data: bytes, event: object) -> None:
    """The `gt=0` float bounds, checked again in Python. msgspec tests `gt=0.0` as "at least the
    smallest subnormal", which lets 0 through once something in the process has turned on
    flush-to-zero / denormals-are-zero (torch.set_flush_denormal, a library built with fast-math);
    Python's `>` on 0.0 does not depend on that mode."""
    if isinstance(event, InferenceRequest):
        values = {"params.top_p": event.params.top_p}
    elif isinstance(event, TrainingRequest):
        settings = event.hyperparameters
        values = {
            "hyperparameters.alpha": settings.alpha,
            "hyperparameters.learning_rate": settings.learning_rate,
            "hyperparameters.epochs": settings.epochs,
        }
    else:
        return
    for path, value in values.items():
        if value is not None and not value > 0:
            _raise_invalid(data, ErrorCode.INVALID_REQUEST, f"Expected `float` > 0.0 - at `$.{path}`")


def decode_request(data: bytes) -> InferenceRequest:
    return decode(data, InferenceRequest)


def decode_reply(data: bytes) -> TokenChunk | ChunkBatch | Final | Error:
    return decode(data, ReplyWire)


def decode_control(data: bytes) -> CancelRequest | CancelJob:
    return decode(data, CancelRequest | CancelJob)


def decode_training_request(data: bytes) -> TrainingRequest:
    return decode(data, TrainingRequest)


def decode_training_event(data: bytes) -> TrainingEvent:
    return decode(data, TrainingEvent)


def decode_adapter_event(data: bytes) -> AdapterEvent:
    return decode(data, AdapterEvent)


def _raise_invalid(data: bytes, code: ErrorCode, message: str) -> None:
    salvaged = _salvage(data)
    if salvaged.version > SCHEMA_VERSION:
        code = ErrorCode.UNSUPPORTED_VERSION
        message = f"schema_version {salvaged.version} is newer than supported {SCHEMA_VERSION}"
    raise InvalidEvent(
        code,
        message,
        request_id=salvaged.request_id,
        reply_to=salvaged.reply_to,
        attempt=salvaged.attempt,
        reply_token=salvaged.reply_token,
    )


@dataclass(frozen=True)
class _Salvaged:
    """What a refused message says about its sender; each field only when it is valid itself."""

    request_id: str | None = None
    reply_to: ReplyAddress | None = None
    reply_token: str | None = None
    attempt: int = 0
    version: int = SCHEMA_VERSION


def _salvage(data: bytes) -> _Salvaged:
    """Best effort: the request_id, reply address and token, attempt and version of a refused message."""
    try:
        obj = msgspec.json.decode(data)
    except Exception:  # any bytes at all: nothing can be salvaged
        return _Salvaged()
    if not isinstance(obj, dict):
        return _Salvaged()
    request_id = obj.get("request_id")
    if not (isinstance(request_id, str) and _REQUEST_ID_RE.match(request_id)):
        return _Salvaged(version=_int_within(obj.get("schema_version"), MAX_COUNT, SCHEMA_VERSION))
    try:
        reply_to = msgspec.convert(obj.get("reply_to"), ReplyAddress | None)
    except msgspec.ValidationError:
        reply_to = None
    reply_token = obj.get("reply_token")
    if not (isinstance(reply_token, str) and _REPLY_TOKEN_RE.match(reply_token)):
        reply_token = None
    return _Salvaged(
        request_id=request_id,
        reply_to=reply_to,
        reply_token=reply_token,
        attempt=_int_within(obj.get("attempt"), MAX_ATTEMPT, 0),
        version=_int_within(obj.get("schema_version"), MAX_COUNT, SCHEMA_VERSION),
    )


def _int_within(value: object, maximum: int, default: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= maximum:
        return value
    return default
