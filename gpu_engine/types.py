"""The engine's own request/event dataclasses: the whole contract between the engine and its callers.

The engine never sees Kafka events; `consumers/` translates events to these and back.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class FinishReason(str, enum.Enum):
    """Why a generation ended."""

    LENGTH = "length"  # max_new_tokens reached (or the model's context was full)
    EOS = "eos"  # the model produced its end-of-sequence token
    STOP = "stop"  # a stop string matched; the text is cut before it
    CANCELLED = "cancelled"  # the caller aborted it
    EXPIRED = "expired"  # its deadline passed while it waited; nothing was computed for it
    ERROR = "error"  # see GenerationEvent.error_code


@dataclass(frozen=True)
class SamplingParams:
    """Per-request decoding controls. temperature == 0 means greedy."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = disabled
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False  # keep generating past EOS (benchmarks); max_new_tokens still ends it

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")


@dataclass(frozen=True)
class ChatMessage:
    """One turn of a chat, as the tokenizer's chat template takes it."""

    role: str
    content: str


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to complete, with the adapter to apply (None = the base model).

    With `messages`, the prompt is those turns rendered by the tokenizer's chat template
    (`apply_chat_template(..., add_generation_prompt=True)`) and `prompt` is ignored.
    """

    request_id: str
    prompt: str
    adapter_id: str | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    deadline_s: float | None = None  # wall clock (time.time()); a request still waiting then ends EXPIRED
    messages: tuple[ChatMessage, ...] | None = None


@dataclass(frozen=True)
class Provenance:
    """What served a request: the base (its name and the sha256 of its weight files, "" when unknown)
    and the adapter version resolved when the request arrived (None for the base model)."""

    base_name: str | None
    base_sha256: str
    adapter_id: str | None = None
    adapter_version: int | None = None
    adapter_checksum: str = ""  # as the version was announced ("" when none was given)


@dataclass(slots=True)
class GenerationEvent:
    """Progress of one request. The last event of a request has `finish_reason` set.

    `text` is the new text since the previous event (always whole UTF-8 characters);
    `token_ids` the tokens produced since the previous event. One is made per sequence per decode
    step, so it is a plain slots class (a frozen dataclass costs ~4x more to build); treat it as
    read-only.
    """

    request_id: str
    text: str = ""
    token_ids: tuple[int, ...] = ()
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error_code: str | None = None  # the code of the EngineError that ended it (gpu_engine/errors.py)
    error_message: str = ""
    adapter_tier: str | None = None  # final event: where the adapter was on arrival (device, host, store)
    provenance: Provenance | None = None  # final event of an accepted request: what served it

    @property
    def is_final(self) -> bool:
        return self.finish_reason is not None
