"""The closed set of error codes carried on the wire, and the decode failure that carries one.

One enum for the whole bus: an inference `Error`, a `failed` `TrainingEvent` and every `DeadLetter`
(whichever request topic it came from) carry an `ErrorCode`, because they share the decode failures
(`malformed`, `invalid_request`, `unsupported_version`) and the dead-letter topic's readers switch on
one set. The engine's and the training job's own codes are mapped to these in `consumers/`.
"""

from __future__ import annotations

import enum

from lorastream.errors import LorastreamError


class ErrorCode(str, enum.Enum):
    """Why a request was refused or failed. Closed: clients may switch on it exhaustively."""

    MALFORMED = "malformed"  # bytes are not a JSON object of the expected event type
    INVALID_REQUEST = "invalid_request"  # well-formed, but a field breaks a limit or a type
    UNSUPPORTED_VERSION = "unsupported_version"  # schema_version newer than this server
    ADAPTER_NOT_FOUND = "adapter_not_found"
    ADAPTER_INVALID = "adapter_invalid"  # adapter files exist but cannot serve this base
    ADAPTER_CORRUPT = "adapter_corrupt"  # weights file unparseable or weights not finite
    ADAPTER_MISSING_FILE = "adapter_missing_file"  # a required adapter file is absent
    ADAPTER_BASE_MISMATCH = "adapter_base_mismatch"  # trained for another base model
    ADAPTER_RANK_TOO_LARGE = "adapter_rank_too_large"  # rank above the server's limit
    ADAPTER_UNSUPPORTED = "adapter_unsupported"  # a LoRA variant or module the engine does not serve
    ADAPTER_CHECKSUM_MISMATCH = "adapter_checksum_mismatch"  # files differ from the registered checksum
    ADAPTER_UNAVAILABLE = "adapter_unavailable"  # adapter store unreachable; retrying may succeed
    ADAPTER_TOO_LARGE = "adapter_too_large"  # a file of the adapter is over the server's byte cap
    ADAPTER_PATH_REFUSED = "adapter_path_refused"  # uri/file outside the configured roots (symlink, other bucket)
    ADAPTER_PATTERN_UNSAFE = "adapter_pattern_unsafe"  # rank/alpha pattern that cannot be matched in linear time
    PROMPT_TOO_LONG = "prompt_too_long"  # more tokens than the model's context allows
    CHAT_TEMPLATE_MISSING = "chat_template_missing"  # chat messages for a model whose tokenizer has no chat template
    BASE_NOT_SERVED = "base_not_served"  # no consumer serves the request's base (or not on this topic)
    REPLY_TOPIC_REFUSED = "reply_topic_refused"  # reply_to outside the reply-topic pattern, or a service topic
    REPLY_TOPIC_NOT_FOUND = "reply_topic_not_found"  # reply_to topic or partition does not exist
    REPLY_NOT_AUTHORIZED = "reply_not_authorized"  # the broker's ACLs refuse the service writes there
    RECORD_TOO_LARGE = "record_too_large"  # an answer record over the producer's/broker's size limit
    DATASET_REFUSED = "dataset_refused"  # a dataset uri outside the configured dataset roots
    EXPIRED = "expired"  # deadline passed before the work was done
    CANCELLED = "cancelled"
    OVERLOADED = "overloaded"
    INTERNAL = "internal"


class InvalidEvent(LorastreamError):
    """Bytes that could not be turned into a valid event.

    `request_id`, `reply_to`, `attempt` and `reply_token` are whatever could be salvaged from the
    bytes, so the sender can still be told (None when nothing usable was found).
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        request_id: str | None = None,
        reply_to: object | None = None,
        attempt: int = 0,
        reply_token: str | None = None,
    ) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id
        self.reply_to = reply_to
        self.attempt = attempt
        self.reply_token = reply_token
