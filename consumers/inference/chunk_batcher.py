"""Packs the TokenChunks bound for one reply address into one record per event-loop iteration.

A client with many concurrent streams has all their chunks sent to its own reply partition. Each
record costs CPU in the service's producer, the broker and the client's fetch, and at 64 streams
a decode step makes 64 chunks at about the same moment. The batcher collects the chunks that
their flush timers (or first tokens) release in one loop iteration. When the iteration ends it
sends one `ChunkBatch` per reply address, or the plain TokenChunk when there is only one. Only
requests that set `batch_chunks` come here; the service sends other requests' chunks one by one.

Order: a request's Final or Error must not overtake its last chunk. So the service queues a
request's last record with `then(address, send)`: it is put on the outbox right after the chunks
waiting for that address (at the end of the iteration, so that the streams finishing in one engine
step share one chunk record), or at once when none wait; both go through the same outbox lane
(one per topic). `flush(address)` sends what waits now. A record that cannot be sent is reported to
`on_failed` once for each request whose chunks it carried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from streamer.outbox import Outbox
from streamer.send_policy import SendOutcome
from schemas import ChunkBatch, ReplyAddress, TokenChunk, encode

OnFailed = Callable[[str, SendOutcome], None]  # (request_id, outcome)

MAX_CHUNKS_PER_RECORD = 256  # well under the schema's 1024 and Kafka's 1 MiB default record limit


class ChunkBatcher:
    def __init__(
        self,
        outbox: Outbox,
        loop: asyncio.AbstractEventLoop,
        max_chunks: int = MAX_CHUNKS_PER_RECORD,
        on_failed: OnFailed | None = None,
    ) -> None:
        if max_chunks < 1:
            raise ValueError("max_chunks must be >= 1")
        self._outbox = outbox
        self._on_failed = on_failed
        self._loop = loop
        self._max_chunks = max_chunks
        self._pending: dict[tuple[str, int | None], list[TokenChunk]] = {}
        self._then: dict[tuple[str, int | None], list[Callable[[], None]]] = {}  # sends after the chunks
        self._scheduled = False
        self.records_sent = 0
        self.chunks_sent = 0

    def add(self, address: ReplyAddress, chunk: TokenChunk) -> None:
        """Queue a chunk; it leaves at the end of this loop iteration (or at once if the record is full)."""
        key = (address.topic, address.partition)
        chunks = self._pending.setdefault(key, [])
        chunks.append(chunk)
        if len(chunks) >= self._max_chunks:
            self._release(key)
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush_all)

    def then(self, address: ReplyAddress, send: Callable[[], None]) -> None:
        """Run `send` (which puts a record for `address`) right after the chunks waiting for it leave."""
        key = (address.topic, address.partition)
        if key in self._pending:
            self._then.setdefault(key, []).append(send)
        else:
            send()

    def flush(self, address: ReplyAddress) -> None:
        """Send what waits for `address` now."""
        self._release((address.topic, address.partition))

    def _flush_all(self) -> None:
        self._scheduled = False
        for key in list(self._pending):
            self._release(key)

    def _release(self, key: tuple[str, int | None]) -> None:
        chunks = self._pending.pop(key, None)
        if chunks:
            self._send(key, chunks)
        for send in self._then.pop(key, ()):
            send()

    def _send(self, key: tuple[str, int | None], chunks: list[TokenChunk]) -> None:
        topic, partition = key
        if len(chunks) == 1:
            value, record_key = encode(chunks[0]), chunks[0].request_id.encode()
        else:
            value, record_key = encode(ChunkBatch(chunks)), None
        self._outbox.put(topic, value, key=record_key, partition=partition, on_done=lambda o: self._done(chunks, o))
        self.records_sent += 1
        self.chunks_sent += len(chunks)

    def _done(self, chunks: list[TokenChunk], outcome: SendOutcome) -> None:
        if outcome.ok or self._on_failed is None:
            return
        for request_id in dict.fromkeys(chunk.request_id for chunk in chunks):
            self._on_failed(request_id, outcome)
