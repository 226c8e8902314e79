"""Dead-letter records: the original bytes of a refused message and why it was refused."""

from __future__ import annotations

import msgspec

from schemas.errors import ErrorCode
from schemas.limits import SCHEMA_VERSION


class DeadLetter(msgspec.Struct, frozen=True, tag="dead_letter", tag_field="kind"):
    source_topic: str
    partition: int
    offset: int
    code: ErrorCode
    reason: str
    original: bytes  # base64 in JSON
    request_id: str | None = None
    ts_ms: int = 0
    schema_version: int = SCHEMA_VERSION
