"""Limits enforced when events are decoded, and the field types that carry them."""

from __future__ import annotations

from typing import Annotated

import msgspec

SCHEMA_VERSION = 1

MAX_PROMPT_BYTES = 64 * 1024
MAX_NEW_TOKENS = 4096
MAX_STOP_STRINGS = 8
MAX_STOP_CHARS = 64
MAX_TOP_K = 1000
MAX_TEMPERATURE = 10.0
MIN_PRIORITY, MAX_PRIORITY = -100, 100
MAX_ATTEMPT = 1000
MAX_BATCH_CHUNKS = 1024  # TokenChunks in one ChunkBatch record

# letters, digits and ._-/ ; 1-128 chars; no "..", no leading "/"
ADAPTER_ID_PATTERN = r"^(?!/)(?!.*\.\.)[A-Za-z0-9._/-]{1,128}$"
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
TOPIC_PATTERN = r"^[A-Za-z0-9._-]{1,249}$"

AdapterId = Annotated[str, msgspec.Meta(pattern=ADAPTER_ID_PATTERN)]
RequestId = Annotated[str, msgspec.Meta(pattern=REQUEST_ID_PATTERN)]
TopicName = Annotated[str, msgspec.Meta(pattern=TOPIC_PATTERN)]
NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
Attempt = Annotated[int, msgspec.Meta(ge=0, le=MAX_ATTEMPT)]
StopString = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_STOP_CHARS)]

