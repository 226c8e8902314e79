"""One request's answer as an async iterator: TokenChunks, then the Final."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Self

from schemas import Error, Final, InferenceRequest, ReplyRecord, TokenChunk
from streamer.errors import ClientClosed, RequestFailed, RequestTimeout

if TYPE_CHECKING:
    from streamer.client import LoraClient


class RequestStream:
    """Sends its request on first iteration and yields the deduplicated answer.

    Yields TokenChunk records and finally the Final (usage and timings); an Error record raises
    RequestFailed, no record within `timeout_s` raises RequestTimeout. Leaving early — `break`,
    `aclose()`, leaving `async with`, cancelling the awaiting task, or a timeout — stops waiting
    and publishes a CancelRequest so the service stops generating.
    """

    def __init__(
        self,
        client: LoraClient,
        request: InferenceRequest,
        *,
        timeout_s: float,
        partition_key: str | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.request = request
        self.timeout_s = timeout_s
        self._client = client
        self._partition_key = partition_key
        self._queue: asyncio.Queue[ReplyRecord | BaseException] = asyncio.Queue()
        self._is_registered = False
        self._is_finished = False
        self._final: Final | None = None

    @property
    def request_id(self) -> str:
        return self.request.request_id

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> TokenChunk | Final:
        if self._is_finished:
            raise StopAsyncIteration
        if not self._is_registered:
            await self._send()
        try:
            async with asyncio.timeout(self.timeout_s):
                item = await self._queue.get()
        except TimeoutError:
            self._abandon()
            raise RequestTimeout(self.request_id, self.timeout_s) from None
        except BaseException:  # cancelled while waiting
            self._abandon()
            raise
        if isinstance(item, TokenChunk):
            return item
        self._is_finished = True
        if isinstance(item, Final):
            self._final = item
            return item
        if isinstance(item, Error):
            raise RequestFailed(self.request_id, item.code, item.message)
        raise item

    async def final(self) -> Final:
        """Read the rest of the answer and return its Final."""
        async for _ in self:
            pass
        if self._final is None:
            raise ClientClosed(f"request {self.request_id}: the stream ended without a Final")
        return self._final

    async def aclose(self) -> None:
        """Stop waiting; if the answer is unfinished, publish a CancelRequest."""
        if self._is_finished:
            return
        self._is_finished = True
        if self._is_registered and self._client._forget(self.request_id):
            await self._client._publish_cancel(self.request_id)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        # `break` out of `async for` drops the last reference without awaiting aclose()
        if self._is_registered and not self._is_finished:
            self._is_finished = True
            self._client._abandon_soon(self.request_id)

    async def _send(self) -> None:
        try:
            self._client._register(self.request, self._queue.put_nowait)
        except BaseException:
            self._is_finished = True
            raise
        self._is_registered = True  # from here on a cancel may be needed: the record may be out
        try:
            await self._client.send_request(self.request, partition_key=self._partition_key)
        except BaseException:
            self._abandon()
            raise

    def _abandon(self) -> None:
        if self._is_finished:
            return
        self._is_finished = True
        if self._is_registered and self._client._forget(self.request_id):
            self._client._cancel_in_background(self.request_id)
