"""A stand-in for LoraClient that answers from a script, for the HTTP layer's fast tests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from schemas import ErrorCode, Final, FinishReason, TokenChunk, Usage
from streamer.errors import RequestFailed


@dataclass
class FakeStream:
    request_id: str
    pieces: list[str]
    error: ErrorCode | None = None
    error_after: int = 0  # pieces sent before the error
    delay_s: float = 0.0  # before each record
    sent: int = 0
    is_closed_early: bool = False
    _is_finished: bool = False

    def __aiter__(self) -> FakeStream:
        return self

    async def __anext__(self) -> TokenChunk | Final:
        if self._is_finished:
            raise StopAsyncIteration
        await asyncio.sleep(self.delay_s)
        if self.error is not None and self.sent >= self.error_after:
            self._is_finished = True
            raise RequestFailed(self.request_id, self.error, f"scripted {self.error.value}")
        if self.sent < len(self.pieces):
            self.sent += 1
            return TokenChunk(self.request_id, 0, self.sent - 1, self.pieces[self.sent - 1])
        self._is_finished = True
        return Final(self.request_id, 0, self.sent, FinishReason.LENGTH, "".join(self.pieces),
                     usage=Usage(prompt_tokens=4, completion_tokens=len(self.pieces)))

    async def aclose(self) -> None:
        if not self._is_finished:
            self._is_finished = True
            self.is_closed_early = True


@dataclass
class FakeClient:
    pieces: list[str] = field(default_factory=lambda: ["Hello", " there", "!"])
    error: ErrorCode | None = None
    error_after: int = 0
    delay_s: float = 0.0
    calls: list[dict[str, Any]] = field(default_factory=list)
    streams: list[FakeStream] = field(default_factory=list)

    def stream(self, prompt: str | None = None, adapter_id: str | None = None, **options: Any) -> FakeStream:
        self.calls.append({"prompt": prompt, "adapter_id": adapter_id, **options})
        stream = FakeStream(options["request_id"], list(self.pieces), self.error, self.error_after, self.delay_s)
        self.streams.append(stream)
        return stream
