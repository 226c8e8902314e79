"""Limits enforced when events are decoded, and the field types that carry them.

Every record on a topic may come from a hostile or careless tenant, so every number, string, list
and map of every event has a bound here. JSON floats are finite by construction: msgspec refuses
`NaN`/`Infinity` as malformed and an overflowing literal such as `1e999` as out of range.
Patterns end in `\\Z`, not `$`: `$` also matches before a trailing newline.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

SCHEMA_VERSION = 1

# inference requests
MAX_PROMPT_BYTES = 64 * 1024  # a prompt, or all of a chat request's message contents together
MAX_CHAT_MESSAGES = 256  # messages of one chat request
MAX_ROLE_CHARS = 32
MAX_NEW_TOKENS = 4096
MAX_STOP_STRINGS = 8
MAX_STOP_CHARS = 64
MAX_TOP_K = 1000
MAX_TEMPERATURE = 10.0
MIN_PRIORITY, MAX_PRIORITY = -100, 100
MAX_ATTEMPT = 1000  # what a producer may ask; answers add the partition epoch (see MAX_COUNT)
MAX_SEED = 2**63 - 1  # a signed 64-bit generator seed
REPLY_TOKEN_PATTERN = r"^[A-Za-z0-9_-]{16,64}\Z"  # a per-request secret, urlsafe base64
ROLE_PATTERN = rf"^[A-Za-z0-9_-]{{1,{MAX_ROLE_CHARS}}}\Z"  # a chat role: system, user, assistant, tool, ...

# numbers shared by every event
MAX_EPOCH_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
MAX_PARTITION = 2**31 - 1  # Kafka partition numbers are int32
MAX_OFFSET = 2**63 - 1  # Kafka offsets are int64
MAX_COUNT = 2**53  # counters, seqs, answer attempts: exact as a float64 (and in JavaScript)
MAX_DURATION_MS = float(MAX_EPOCH_MS)
MAX_TOKEN_ID = 2**31 - 1

# answers and progress events (what clients decode)
MAX_BATCH_CHUNKS = 1024  # TokenChunks in one ChunkBatch record
MAX_ANSWER_CHARS = MAX_NEW_TOKENS * 256  # generous: no tokenizer's token is 256 characters long
MAX_MESSAGE_CHARS = 8192  # Error.message, TrainingEvent.reason (producers clip with clip_message)
MAX_NAME_CHARS = 256  # served_by
MAX_METRICS = 64  # entries of TrainingEvent.metrics

# adapters and training
MAX_ADAPTER_VERSION = MAX_COUNT  # the registry compares versions; nothing above this is plausible
MAX_ADAPTER_RANK = 1024
MAX_TRAINING_RANK = 256
MAX_LORA_ALPHA = 4096.0
MAX_TRAINING_STEPS = 1_000_000
MAX_URI_CHARS = 2048

# letters, digits and ._-/ ; 1-128 chars; no "..", no leading "/"
ADAPTER_ID_PATTERN = r"^(?!/)(?!.*\.\.)[A-Za-z0-9._/-]{1,128}\Z"
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}\Z"
TOPIC_PATTERN = r"^[A-Za-z0-9._-]{1,249}\Z"
CHECKSUM_PATTERN = r"^(?:[0-9a-f]{64})?\Z"  # sha256 hex digest, or "" for none
BASE_MODEL_PATTERN = r"^[A-Za-z0-9._/:@+-]{1,256}\Z"  # a name or a path: no spaces, no controls
URI_PATTERN = rf"^[^\x00-\x1f\x7f]{{0,{MAX_URI_CHARS}}}\Z"  # no control characters (a NUL would reach open())
TASK_NAME_PATTERN = r"^[A-Za-z0-9._-]{1,64}\Z"
FIELD_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}\Z"  # a dataset's JSON key
METRIC_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}\Z"

AdapterId = Annotated[str, msgspec.Meta(pattern=ADAPTER_ID_PATTERN)]
RequestId = Annotated[str, msgspec.Meta(pattern=REQUEST_ID_PATTERN)]
TopicName = Annotated[str, msgspec.Meta(pattern=TOPIC_PATTERN)]
ReplyToken = Annotated[str, msgspec.Meta(pattern=REPLY_TOKEN_PATTERN)]
Checksum = Annotated[str, msgspec.Meta(pattern=CHECKSUM_PATTERN)]
BaseModelName = Annotated[str, msgspec.Meta(pattern=BASE_MODEL_PATTERN)]
Uri = Annotated[str, msgspec.Meta(pattern=URI_PATTERN)]
TaskName = Annotated[str, msgspec.Meta(pattern=TASK_NAME_PATTERN)]
FieldName = Annotated[str, msgspec.Meta(pattern=FIELD_NAME_PATTERN)]
MetricName = Annotated[str, msgspec.Meta(pattern=METRIC_NAME_PATTERN)]
ServedBy = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_CHARS)]
Message = Annotated[str, msgspec.Meta(max_length=MAX_MESSAGE_CHARS)]
AnswerText = Annotated[str, msgspec.Meta(max_length=MAX_ANSWER_CHARS)]
ChatRole = Annotated[str, msgspec.Meta(pattern=ROLE_PATTERN)]
ChatContent = Annotated[str, msgspec.Meta(max_length=MAX_PROMPT_BYTES)]  # and bytes: InferenceRequest
StopString = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_STOP_CHARS)]

SchemaVersion = Annotated[int, msgspec.Meta(ge=1, le=MAX_COUNT)]
EpochMs = Annotated[int, msgspec.Meta(ge=0, le=MAX_EPOCH_MS)]
Attempt = Annotated[int, msgspec.Meta(ge=0, le=MAX_ATTEMPT)]
Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)]
Partition = Annotated[int, msgspec.Meta(ge=0, le=MAX_PARTITION)]
Seed = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEED)]
TokenId = Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKEN_ID)]
DurationMs = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_DURATION_MS)]


def clip_message(text: str) -> str:
    """`text` cut to MAX_MESSAGE_CHARS (with a trailing ellipsis when cut), so it always decodes."""
    if len(text) <= MAX_MESSAGE_CHARS:
        return text
    return text[: MAX_MESSAGE_CHARS - 1] + "…"

