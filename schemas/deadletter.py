"""Dead-letter records: a refused message, why it was refused, and its bytes when they fit.

A dead letter must always be deliverable, or the record it reports would hold its partition's
commit forever. So `original` keeps the whole message only up to a byte limit (base64 in JSON
makes it 4/3 larger); past it, the first bytes are kept and `truncated` is set, with the full size
and SHA-256 for matching the dead letter to the message. The reason is cut to a bounded length.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

import msgspec

from schemas.errors import ErrorCode
from schemas.limits import (
    MAX_OFFSET,
    SCHEMA_VERSION,
    Checksum,
    Count,
    EpochMs,
    Partition,
    RequestId,
    SchemaVersion,
    TopicName,
)

# 512 KiB of original → ~683 KiB of base64: with the other fields, under the 1 MiB that producers
# and brokers accept by default
DEFAULT_DEAD_LETTER_ORIGINAL_BYTES = 512 * 1024
MAX_REASON_CHARS = 2048


class DeadLetter(msgspec.Struct, frozen=True, tag="dead_letter", tag_field="kind"):
    """A refused record of `source_topic`/`partition`/`offset`, why (`code`, `reason`), and its bytes."""

    source_topic: TopicName
    partition: Partition
    offset: Annotated[int, msgspec.Meta(ge=0, le=MAX_OFFSET)]
    code: ErrorCode
    reason: Annotated[str, msgspec.Meta(max_length=MAX_REASON_CHARS)]
    original: bytes  # base64 in JSON; the first bytes only when `truncated`
    request_id: RequestId | None = None
    ts_ms: EpochMs = 0
    original_bytes: Count = 0  # the size of the whole message
    original_sha256: Checksum = ""  # hex digest of the whole message
    truncated: bool = False
    schema_version: SchemaVersion = SCHEMA_VERSION


def dead_letter(
    *,
    source_topic: str,
    partition: int,
    offset: int,
    code: ErrorCode,
    reason: str,
    original: bytes,
    request_id: str | None,
    ts_ms: int,
    max_original_bytes: int = DEFAULT_DEAD_LETTER_ORIGINAL_BYTES,
) -> DeadLetter:
    """A DeadLetter whose size is bounded whatever the message's size."""
    if max_original_bytes < 0:
        raise ValueError("max_original_bytes must be >= 0")
    truncated = len(original) > max_original_bytes
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[: MAX_REASON_CHARS - 1] + "…"
    return DeadLetter(
        source_topic=source_topic,
        partition=partition,
        offset=offset,
        code=code,
        reason=reason,
        original=original[:max_original_bytes] if truncated else original,
        request_id=request_id,
        ts_ms=ts_ms,
        original_bytes=len(original),
        original_sha256=hashlib.sha256(original).hexdigest(),
        truncated=truncated,
    )
