"""One generation request answered: the service's records → one JSON body or an SSE stream.

The answer's first record is awaited before the HTTP status is chosen, so a refusal the service
sends at once (adapter_not_found, overloaded, invalid input) is a proper 4xx/5xx and not an error
inside a 200 stream. Leaving the stream early for any reason (the HTTP client went away, an
error) closes the RequestStream, which publishes a CancelRequest: the service stops generating.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Protocol

import anyio
from starlette.responses import JSONResponse, Response, StreamingResponse

from gateway.errors import RETRYABLE_STATUSES, ApiError, from_wire_error, model_not_found, timed_out, unavailable
from gateway.metrics import GatewayMetrics
from gateway.requests import Generation
from gateway.responses import ChunkWriter, final_body, sse
from schemas import ErrorCode, Final, InvalidEvent, TokenChunk
from streamer.errors import ClientClosed, PublishFailed, RequestFailed, RequestTimeout

log = logging.getLogger(__name__)

_CANCEL_WAIT_S = 5.0  # leaving a stream: the longest the CancelRequest's publishing is awaited


class AnswerStream(Protocol):
    """What LoraClient.stream returns (streamer.stream.RequestStream)."""

    def __aiter__(self) -> AnswerStream: ...
    async def __anext__(self) -> TokenChunk | Final: ...
    async def aclose(self) -> None: ...


class InferenceClient(Protocol):
    """The part of streamer.client.LoraClient the gateway uses."""

    def stream(self, prompt: str | None = None, adapter_id: str | None = None, **options: Any) -> AnswerStream: ...


def new_request_id(tenant: str) -> str:
    """The tenant rides in the request id (`tenant:hex`) until InferenceRequest has a field for it."""
    return f"{tenant}:{uuid.uuid4().hex}"


def as_api_error(exc: BaseException, gen: Generation) -> ApiError:
    """The one place a failure of a request becomes an HTTP answer."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, RequestFailed):
        if exc.code is ErrorCode.ADAPTER_NOT_FOUND:
            return model_not_found(gen.model)
        return from_wire_error(exc.code.value, exc.message)
    if isinstance(exc, InvalidEvent):
        return ApiError(400, exc.message, exc.code.value)
    if isinstance(exc, RequestTimeout):
        return timed_out(exc.timeout_s)
    if isinstance(exc, PublishFailed | ClientClosed):
        return unavailable(f"the request could not be published to Kafka: {exc}")
    log.error("request failed unexpectedly", exc_info=exc)
    return ApiError(500, "internal error of the gateway", "internal")


def error_response(error: ApiError, retry_after_s: int) -> JSONResponse:
    headers = {"Retry-After": str(retry_after_s)} if error.status in RETRYABLE_STATUSES else None
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


class Answerer:
    """Turns a parsed request into a Response through one shared client."""

    def __init__(self, client: InferenceClient, metrics: GatewayMetrics, *, timeout_s: float, retry_after_s: int) -> None:
        self._client = client
        self._metrics = metrics
        self._timeout_s = timeout_s
        self._retry_after_s = retry_after_s

    async def answer(
        self, gen: Generation, adapter_id: str | None, tenant: str, route: str, *, base: str | None = None
    ) -> Response:
        """`base`: another base than the deployment's default (its lane; None: the default)."""
        request_id = new_request_id(tenant)
        received = time.monotonic()
        self._metrics.inflight.inc()
        stream: AnswerStream | None = None
        try:
            stream = self._open(gen, adapter_id, request_id, base)
            first = await anext(stream)
        except BaseException as exc:
            self._metrics.inflight.dec()
            if stream is not None:
                await _close(stream)
            if not isinstance(exc, Exception):
                raise
            return error_response(as_api_error(exc, gen), self._retry_after_s)
        self._metrics.ttft_seconds.labels(route).observe(time.monotonic() - received)
        if gen.stream:
            events = self._events(gen, request_id, stream, first, tenant, route, received)
            return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        try:
            final = first if isinstance(first, Final) else await _final(stream)
        except Exception as exc:
            return error_response(as_api_error(exc, gen), self._retry_after_s)
        finally:
            self._metrics.inflight.dec()
            await _close(stream)
        self._metrics.completion_tokens.labels(tenant).inc(final.usage.completion_tokens)
        return JSONResponse(final_body(gen, request_id, final))

    def _open(self, gen: Generation, adapter_id: str | None, request_id: str, base: str | None) -> AnswerStream:
        options: dict[str, Any] = dict(
            max_new_tokens=gen.max_new_tokens,
            temperature=gen.temperature,
            top_p=gen.top_p,
            top_k=gen.top_k,
            stop=gen.stop,
            seed=gen.seed,
            ignore_eos=gen.ignore_eos,
            request_id=request_id,
            timeout_s=self._timeout_s,
        )
        if gen.is_chat:
            options["messages"] = [dict(m) for m in gen.messages]
        if base is not None:
            options["base"] = base
        return self._client.stream(gen.prompt, adapter_id, **options)

    async def _events(
        self, gen: Generation, request_id: str, stream: AnswerStream, first: TokenChunk | Final,
        tenant: str, route: str, received: float,
    ) -> AsyncIterator[bytes]:
        writer = ChunkWriter(gen, request_id)
        outcome = "disconnected"  # unless the loop below ends otherwise
        try:
            for event in writer.opening():
                yield event
            record = first
            while isinstance(record, TokenChunk):
                if record.text:
                    yield writer.text(record.text)
                record = await anext(stream)
            for event in writer.closing(record):
                yield event
            outcome = "finished"
            self._metrics.completion_tokens.labels(tenant).inc(record.usage.completion_tokens)
        except Exception as exc:
            outcome = "error"
            yield sse(as_api_error(exc, gen).body())
        finally:
            self._metrics.inflight.dec()
            self._metrics.stream_seconds.labels(route, outcome).observe(time.monotonic() - received)
            await _close(stream)


async def _final(stream: AnswerStream) -> Final:
    async for record in stream:
        if isinstance(record, Final):
            return record
    raise ClientClosed("the answer ended without a Final")


async def _close(stream: AnswerStream) -> None:
    """Close even while being cancelled (a disconnect): the CancelRequest must still go out."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(_CANCEL_WAIT_S):
        await stream.aclose()
