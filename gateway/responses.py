"""The service's answer records → OpenAI response bodies and Server-Sent Event chunks.

Non-streaming: one `text_completion` / `chat.completion` object from the Final. Streaming: one
chunk per TokenChunk (`text_completion` / `chat.completion.chunk`; a chat stream opens with the
assistant role), a last chunk with the finish_reason, with `stream_options.include_usage` a chunk
with empty choices and the usage, then `data: [DONE]`. An error after the stream started is sent
as `data: {"error": ...}` (the SDKs raise it) and the stream ends without [DONE].
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.requests import Generation
from schemas import Final, FinishReason, Usage

FINISH_REASONS = {
    FinishReason.LENGTH: "length",
    FinishReason.EOS: "stop",
    FinishReason.STOP: "stop",
    FinishReason.CANCELLED: "cancelled",  # only when cancelled by someone other than this client
}
DONE = b"data: [DONE]\n\n"


def response_id(request_id: str, chat: bool) -> str:
    return f"{'chatcmpl' if chat else 'cmpl'}-{request_id}"


def usage_body(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def final_body(gen: Generation, request_id: str, final: Final) -> dict[str, Any]:
    """The whole answer of a request without `stream`."""
    reason = FINISH_REASONS[final.finish_reason]
    if gen.is_chat:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": final.text},
            "finish_reason": reason,
            "logprobs": None,
        }
        kind = "chat.completion"
    else:
        choice = {"index": 0, "text": final.text, "finish_reason": reason, "logprobs": None}
        kind = "text_completion"
    return {
        "id": response_id(request_id, gen.is_chat),
        "object": kind,
        "created": int(time.time()),
        "model": gen.model,
        "choices": [choice],
        "usage": usage_body(final.usage),
    }


class ChunkWriter:
    """The SSE events of one streamed answer, in order."""

    def __init__(self, gen: Generation, request_id: str) -> None:
        self._gen = gen
        self._id = response_id(request_id, gen.is_chat)
        self._created = int(time.time())
        self._kind = "chat.completion.chunk" if gen.is_chat else "text_completion"

    def opening(self) -> list[bytes]:
        """Events before the first text: a chat stream announces the assistant role."""
        if not self._gen.is_chat:
            return []
        return [self._event([self._choice({"role": "assistant", "content": ""}, None)])]

    def text(self, text: str) -> bytes:
        delta = {"content": text} if self._gen.is_chat else text
        return self._event([self._choice(delta, None)])

    def closing(self, final: Final) -> list[bytes]:
        """The finish_reason, the usage when asked for, and [DONE]."""
        empty = {} if self._gen.is_chat else ""
        events = [self._event([self._choice(empty, FINISH_REASONS[final.finish_reason])])]
        if self._gen.include_usage:
            events.append(self._event([], usage=usage_body(final.usage)))
        events.append(DONE)
        return events

    def _choice(self, delta: Any, finish_reason: str | None) -> dict[str, Any]:
        if self._gen.is_chat:
            return {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return {"index": 0, "text": delta, "finish_reason": finish_reason, "logprobs": None}

    def _event(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": self._id,
            "object": self._kind,
            "created": self._created,
            "model": self._gen.model,
            "choices": choices,
        }
        if self._gen.include_usage:
            body["usage"] = usage  # null on every chunk but the last, as OpenAI sends it
        return sse(body)


def sse(body: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(body) + b"\n\n"
