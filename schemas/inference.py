"""Inference events: the request, and the three records that answer it (chunk, final, error)."""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from schemas.errors import ErrorCode
from schemas.limits import (
    Checksum,
    MAX_BATCH_CHUNKS,
    MAX_NEW_TOKENS,
    MAX_PRIORITY,
    MAX_PROMPT_BYTES,
    MAX_STOP_STRINGS,
    MAX_TEMPERATURE,
    MAX_TOP_K,
    MIN_PRIORITY,
    SCHEMA_VERSION,
    AdapterId,
    MAX_CHAT_MESSAGES,
    AnswerText,
    Attempt,
    ChatContent,
    ChatRole,
    Count,
    DurationMs,
    EpochMs,
    Message,
    Partition,
    ReplyToken,
    RequestId,
    SchemaVersion,
    Seed,
    ServedBy,
    StopString,
    TokenId,
    TopicName,
    BaseModelName,
    MAX_NAME_CHARS,
)

EngineVersion = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_CHARS)]


class SamplingParams(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """Decoding controls. temperature 0 = greedy; top_k 0 = off; seed fixes the sample stream."""

    max_new_tokens: Annotated[int, msgspec.Meta(ge=1, le=MAX_NEW_TOKENS)] = 64
    temperature: Annotated[float, msgspec.Meta(ge=0.0, le=MAX_TEMPERATURE)] = 0.0
    top_p: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 1.0
    top_k: Annotated[int, msgspec.Meta(ge=0, le=MAX_TOP_K)] = 0
    stop: Annotated[list[StopString], msgspec.Meta(max_length=MAX_STOP_STRINGS)] = []
    seed: Seed | None = None
    ignore_eos: bool = False  # True: the model's end-of-sequence tokens do not end the answer


class ChatMessage(msgspec.Struct, frozen=True):
    """One turn of a chat request; the service renders the turns with the model's chat template."""

    role: ChatRole  # system, user, assistant, tool, ... (what the model's template knows)
    content: ChatContent


class ReplyAddress(msgspec.Struct, frozen=True):
    """Where answer records go: a topic, and optionally one partition of it."""

    topic: TopicName
    partition: Partition | None = None


class InferenceRequest(msgspec.Struct, frozen=True, tag="request", tag_field="kind"):
    """A prompt, or chat messages, for the base model (adapter_id None) or one LoRA adapter.

    Exactly one of a non-empty `prompt` (completed as it is) and non-empty `messages` (rendered
    with the model's chat template, ending with the assistant's turn to speak).
    """

    request_id: RequestId
    prompt: Annotated[str, msgspec.Meta(max_length=MAX_PROMPT_BYTES)] = ""  # and bytes: __post_init__
    messages: Annotated[list[ChatMessage], msgspec.Meta(max_length=MAX_CHAT_MESSAGES)] | None = None
    adapter_id: AdapterId | None = None
    params: SamplingParams = SamplingParams()
    reply_to: ReplyAddress | None = None
    deadline_ms: EpochMs | None = None  # unix epoch ms; past it the request is answered expired
    priority: Annotated[int, msgspec.Meta(ge=MIN_PRIORITY, le=MAX_PRIORITY)] = 0
    attempt: Attempt = 0
    created_ms: EpochMs = 0  # sender's clock, for queue-time accounting
    stream: bool = True  # False: no TokenChunk records, only the Final
    # True: the requester reads ChunkBatch records, so the service may pack the chunks of several
    # requests bound for the same reply address into one record (fewer records per token)
    batch_chunks: bool = False
    # a secret of the requester, echoed in every answer record: a reply-topic reader drops records
    # without it, so nobody who cannot read this request can forge its answer (see streamer.replies)
    reply_token: ReplyToken | None = None
    # the base model it is for (a name a consumer announces in the catalogue); None: the
    # deployment's default base. A consumer serving another base answers base_not_served.
    base: BaseModelName | None = None
    schema_version: SchemaVersion = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if bool(self.prompt) == bool(self.messages):
            raise ValueError("give exactly one of a non-empty prompt and non-empty messages")
        if _utf8_bytes(self.prompt) > MAX_PROMPT_BYTES:
            raise ValueError(f"prompt is longer than {MAX_PROMPT_BYTES} bytes")
        if self.messages and sum(_utf8_bytes(m.content) for m in self.messages) > MAX_PROMPT_BYTES:
            raise ValueError(f"messages' contents are longer than {MAX_PROMPT_BYTES} bytes together")


def _utf8_bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


class TokenChunk(msgspec.Struct, frozen=True, tag="chunk", tag_field="kind"):
    """Some new text of a streaming answer. seq counts answer records of one attempt from 0."""

    request_id: RequestId
    attempt: Count
    seq: Count
    text: AnswerText
    token_ids: Annotated[list[TokenId], msgspec.Meta(max_length=MAX_NEW_TOKENS)] = []
    reply_token: ReplyToken | None = None  # the request's, echoed
    schema_version: SchemaVersion = SCHEMA_VERSION


class FinishReason(str, enum.Enum):
    LENGTH = "length"
    EOS = "eos"
    STOP = "stop"
    CANCELLED = "cancelled"


class Usage(msgspec.Struct, frozen=True):
    prompt_tokens: Count = 0
    completion_tokens: Count = 0


class Timings(msgspec.Struct, frozen=True):
    """Milliseconds: queue = received → engine start, ttft = received → first token, total."""

    queue_ms: DurationMs = 0.0
    ttft_ms: DurationMs = 0.0
    total_ms: DurationMs = 0.0


class Lineage(msgspec.Struct, frozen=True, kw_only=True):
    """What produced an answer: the base, the adapter version, the decoding and the server.

    The base is named and identified by the sha256 of its weight files (computed once at start);
    `seed` is the seed actually used (the request's, or the one derived from its request_id) and
    `params` the SamplingParams as served, with that seed. Fields the server could not tell are
    null or "" (an engine that reports no base, a request for the base model has no adapter).
    """

    base_name: BaseModelName | None = None
    base_sha256: Checksum = ""
    adapter_id: AdapterId | None = None
    adapter_version: Count | None = None
    adapter_checksum: Checksum = ""
    seed: Seed
    params: SamplingParams
    engine_version: EngineVersion  # lorastream.__version__ of the serving process
    served_by: ServedBy | None = None


class Final(msgspec.Struct, frozen=True, tag="final", tag_field="kind"):
    """The last record of a successful answer, with the whole text."""

    request_id: RequestId
    attempt: Count
    seq: Count
    finish_reason: FinishReason
    text: AnswerText
    adapter_id: AdapterId | None = None
    usage: Usage = Usage()
    timings: Timings = Timings()
    served_by: ServedBy | None = None  # the consumer that answered (its instance/consumer id)
    reply_token: ReplyToken | None = None  # the request's, echoed
    # on the results copy: sha256 of the request record answered, so that only the same record,
    # re-served after a crash, is answered from the copy (never a request that reuses its id)
    request_sha256: Checksum = ""
    lineage: Lineage | None = None  # what produced it (also on the results copy)
    schema_version: SchemaVersion = SCHEMA_VERSION


class Error(msgspec.Struct, frozen=True, tag="error", tag_field="kind"):
    """The last record of a failed answer."""

    request_id: RequestId
    attempt: Count
    seq: Count
    code: ErrorCode
    message: Message
    served_by: ServedBy | None = None
    reply_token: ReplyToken | None = None  # the request's, echoed
    request_sha256: Checksum = ""  # on the results copy: as Final's
    schema_version: SchemaVersion = SCHEMA_VERSION


class ChunkBatch(msgspec.Struct, frozen=True, tag="chunks", tag_field="kind"):
    """TokenChunks of several requests bound for one reply address, in one record. Sent only to
    requesters that set `batch_chunks`; each chunk keeps its own (request_id, attempt, seq)."""

    chunks: Annotated[list[TokenChunk], msgspec.Meta(min_length=1, max_length=MAX_BATCH_CHUNKS)]
    schema_version: SchemaVersion = SCHEMA_VERSION


ReplyRecord = TokenChunk | Final | Error  # what one request's answer consists of
ReplyWire = TokenChunk | ChunkBatch | Final | Error  # what a reply topic carries


class CancelRequest(msgspec.Struct, frozen=True, tag="cancel", tag_field="kind"):
    """Control event: stop working on request_id (answered with finish_reason cancelled)."""

    request_id: RequestId
    schema_version: SchemaVersion = SCHEMA_VERSION
