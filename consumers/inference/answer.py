"""The state of one request while it is being answered, the records it turns into, and when its
pending tokens leave as a chunk (`chunk_due`: the chunk is sized by the stream's token rate)."""

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


INTERVAL_SMOOTHING = 0.25  # weight of the newest inter-token interval in a stream's running estimate


def chunk_due(pending_tokens: int, held_s: float, interval_s: float | None, hold_s: float, max_tokens: int) -> bool:
    """Whether a stream's pending tokens leave now; asked after each burst of engine events.

    A chunk holds tokens at most `hold_s` (the service's chunk_flush_ms) and `max_tokens`. Within
    those bounds its size follows the stream's rate: when the next token is expected (one
    `interval_s` from now) only after the hold ends, waiting would add nothing, so the chunk leaves
    at once. A fast stream thus sends about hold_s / interval_s tokens per chunk, a stream slower
    than one token per hold sends each token as it comes, and no stream waits on a timer per token.
    `interval_s` None (no rate measured yet) holds until a bound is reached.
    """
    if pending_tokens <= 0:
        return False
    if pending_tokens >= max_tokens or held_s >= hold_s:
        return True
    return interval_s is not None and held_s + interval_s > hold_s


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
    pending_since_s: float = 0.0  # when the oldest pending token arrived
    last_token_s: float | None = None  # when the latest tokens arrived
    token_interval_s: float | None = None  # running estimate of the time between the stream's tokens
    text_parts: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
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

    def add(self, text: str, token_ids: tuple[int, ...], now_s: float | None = None) -> None:
        """New tokens (and their text) from the engine, arrived at `now_s` (default: now)."""
        now_s = time.monotonic() if now_s is None else now_s
        if not self.has_pending:
            self.pending_since_s = now_s
        if token_ids:
            if self.first_token_s is None:
                self.first_token_s = now_s
            if self.last_token_s is not None:
                interval_s, estimate = now_s - self.last_token_s, self.token_interval_s
                self.token_interval_s = (
                    interval_s if estimate is None else estimate + INTERVAL_SMOOTHING * (interval_s - estimate)
                )
            self.last_token_s = now_s
        self.completion_tokens += len(token_ids)
        self.pending_ids.extend(token_ids)
        if text:
            self.pending_text.append(text)
            self.text_parts.append(text)

    @property
    def num_pending_tokens(self) -> int:
        """Tokens waiting for the next chunk (text held without a token counts as one)."""
        return len(self.pending_ids) or int(bool(self.pending_text))

    @property
    def has_pending(self) -> bool:
        return bool(self.pending_text or self.pending_ids)

    def take_chunk(self) -> TokenChunk:
        chunk = TokenChunk(
            request_id=self.request_id,
            attempt=self.attempt,
            seq=self.seq,
            text="".join(self.pending_text),
            token_ids=self.pending_ids,  # handed over, not copied
            reply_token=self.request.reply_token,
        )
        self.seq += 1
        self.pending_text.clear()
        self.pending_ids = []
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
        if self.deadline_timer is not None:
            self.deadline_timer.cancel()
        self.deadline_timer = None


def _ms(seconds: float) -> float:
    return round(max(seconds, 0.0) * 1000.0, 3)
