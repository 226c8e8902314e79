"""The state of one request while it is being answered, and the records it turns into."""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field

from schemas import (
    Error,
    ErrorCode,
    Final,
    FinishReason,
    InferenceRequest,
    Timings,
    TokenChunk,
    Usage,
)
from schemas.limits import clip_message


def derived_seed(request_id: str) -> int:
    """A stable seed for requests that give none, so a re-served attempt samples the same text."""
    return int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=8).digest(), "big") >> 1


@dataclass(eq=False)
class Answer:
    """One admitted request: where it came from, what was sent so far, and its timings."""

    request: InferenceRequest
    raw: bytes
    topic: str
    partition: int
    offset: int
    attempt: int
    received_s: float = field(default_factory=time.monotonic)
    submitted_s: float | None = None
    first_token_s: float | None = None
    seq: int = 0  # next answer record's seq
    pending_text: list[str] = field(default_factory=list)
    pending_ids: list[int] = field(default_factory=list)
    text_parts: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    flush_timer: asyncio.TimerHandle | None = None
    deadline_timer: asyncio.TimerHandle | None = None
    expired: bool = False
    finished: bool = False
    extra_offsets: list[tuple[object, int]] = field(default_factory=list)  # same request re-read
    served_by: str | None = None
    adapter_resolved: bool = False  # the engine found its adapter (only then is the id a metric label)
    reply_failed: bool = False  # nothing more goes to reply_to (refused, or a send there failed)

    @property
    def request_id(self) -> str:
        return self.request.request_id

    def add(self, text: str, token_ids: tuple[int, ...]) -> None:
        if token_ids and self.first_token_s is None:
            self.first_token_s = time.monotonic()
        self.completion_tokens += len(token_ids)
        self.pending_ids.extend(token_ids)
        if text:
            self.pending_text.append(text)
            self.text_parts.append(text)

    @property
    def has_pending(self) -> bool:
        return bool(self.pending_text or self.pending_ids)

    def take_chunk(self) -> TokenChunk:
        chunk = TokenChunk(
            request_id=self.request_id,
            attempt=self.attempt,
            seq=self.seq,
            text="".join(self.pending_text),
            token_ids=list(self.pending_ids),
            reply_token=self.request.reply_token,
        )
        self.seq += 1
        self.pending_text.clear()
        self.pending_ids.clear()
        return chunk

    def final(self, finish_reason: FinishReason) -> Final:
        now = time.monotonic()
        submitted = self.submitted_s if self.submitted_s is not None else now
        first = self.first_token_s if self.first_token_s is not None else now
        record = Final(
            request_id=self.request_id,
            attempt=self.attempt,
            seq=self.seq,
            finish_reason=finish_reason,
            text="".join(self.text_parts),
            adapter_id=self.request.adapter_id,
            usage=Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens),
            timings=Timings(
                queue_ms=_ms(submitted - self.received_s),
                ttft_ms=_ms(first - self.received_s),
                total_ms=_ms(now - self.received_s),
            ),
            served_by=self.served_by,
            reply_token=self.request.reply_token,
        )
        self.seq += 1
        return record

    def error(self, code: ErrorCode, message: str) -> Error:
        record = Error(
            request_id=self.request_id,
            attempt=self.attempt,
            seq=self.seq,
            code=code,
            message=clip_message(message),
            served_by=self.served_by,
            reply_token=self.request.reply_token,
        )
        self.seq += 1
        return record

    def cancel_timers(self) -> None:
        for timer in (self.flush_timer, self.deadline_timer):
            if timer is not None:
                timer.cancel()
        self.flush_timer = self.deadline_timer = None


def _ms(seconds: float) -> float:
    return round(max(seconds, 0.0) * 1000.0, 3)
