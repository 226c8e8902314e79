"""ChunkBatcher: chunks released in one loop iteration leave as one record per reply address."""

from __future__ import annotations

import asyncio

import pytest

from consumers.inference.chunk_batcher import ChunkBatcher
from streamer.send_policy import SendOutcome
from schemas import ChunkBatch, ReplyAddress, TokenChunk, decode_reply, encode


class FakeOutbox:
    def __init__(self) -> None:
        self.records: list[tuple[str, object, bytes | None, int | None]] = []
        self.callbacks: list = []

    def put(self, topic, value, *, key=None, partition=None, on_done=None):
        self.records.append((topic, decode_reply(value), key, partition))
        self.callbacks.append(on_done)


A, B = ReplyAddress("replies.a", 0), ReplyAddress("replies.b", 3)


def chunk(request_id: str, seq: int) -> TokenChunk:
    return TokenChunk(request_id, 0, seq, f"{request_id}:{seq}", [seq])


async def test_one_record_per_address_per_iteration():
    outbox = FakeOutbox()
    batcher = ChunkBatcher(outbox, asyncio.get_running_loop())
    for request_id in ("r1", "r2", "r3"):
        batcher.add(A, chunk(request_id, 0))
    batcher.add(B, chunk("r9", 0))
    assert outbox.records == []  # nothing leaves before the iteration ends
    await asyncio.sleep(0)
    (topic_a, batch, key_a, part_a), (topic_b, single, key_b, part_b) = outbox.records
    assert (topic_a, key_a, part_a) == ("replies.a", None, 0)
    assert isinstance(batch, ChunkBatch) and [c.request_id for c in batch.chunks] == ["r1", "r2", "r3"]
    assert (topic_b, key_b, part_b, single) == ("replies.b", b"r9", 3, chunk("r9", 0))  # alone: a plain chunk
    assert (batcher.records_sent, batcher.chunks_sent) == (2, 4)
    batcher.add(A, chunk("r1", 1))
    await asyncio.sleep(0)
    assert outbox.records[-1][1] == chunk("r1", 1)  # a later iteration makes a new record


async def test_flush_sends_before_a_final_and_a_full_record_leaves_at_once():
    outbox = FakeOutbox()
    batcher = ChunkBatcher(outbox, asyncio.get_running_loop(), max_chunks=3)
    batcher.add(A, chunk("r1", 0))
    batcher.add(A, chunk("r2", 0))
    batcher.flush(A)  # what the service does right before queueing r1's Final
    assert [c.request_id for c in outbox.records[0][1].chunks] == ["r1", "r2"]
    batcher.flush(A)  # nothing pending: nothing sent
    for seq in range(4):
        batcher.add(B, chunk("r3", seq))
    assert len(outbox.records) == 2 and len(outbox.records[1][1].chunks) == 3
    await asyncio.sleep(0)
    assert outbox.records[2][1] == chunk("r3", 3)


async def test_max_chunks_is_validated():
    with pytest.raises(ValueError):
        ChunkBatcher(FakeOutbox(), asyncio.get_running_loop(), max_chunks=0)


async def test_a_failed_record_is_reported_once_per_request_it_carried():
    outbox = FakeOutbox()
    failed: list[tuple[str, SendOutcome]] = []
    batcher = ChunkBatcher(outbox, asyncio.get_running_loop(), on_failed=lambda rid, o: failed.append((rid, o)))
    for request_id, seq in (("r1", 0), ("r2", 0), ("r1", 1)):
        batcher.add(A, chunk(request_id, seq))
    batcher.flush(A)
    (on_done,) = outbox.callbacks
    on_done(SendOutcome.DELIVERED)
    assert failed == []
    on_done(SendOutcome.NOT_AUTHORIZED)
    assert failed == [("r1", SendOutcome.NOT_AUTHORIZED), ("r2", SendOutcome.NOT_AUTHORIZED)]


async def test_a_last_record_follows_the_chunks_waiting_for_its_address():
    outbox = FakeOutbox()
    batcher = ChunkBatcher(outbox, asyncio.get_running_loop())
    sent_last: list[str] = []

    def last(request_id: str, address: ReplyAddress):
        def send():
            sent_last.append(request_id)
            outbox.put(address.topic, encode(chunk(request_id, 99)), partition=address.partition)

        return send

    batcher.then(B, last("idle", B))  # nothing waits for B: at once
    assert sent_last == ["idle"]
    for request_id in ("r1", "r2"):  # two streams finish in the same step: one chunk record, then both
        batcher.add(A, chunk(request_id, 0))
        batcher.then(A, last(request_id, A))
    assert sent_last == ["idle"]
    await asyncio.sleep(0)
    assert sent_last == ["idle", "r1", "r2"]
    records = [record for topic, record, _, _ in outbox.records if topic == "replies.a"]
    assert isinstance(records[0], ChunkBatch) and [c.request_id for c in records[0].chunks] == ["r1", "r2"]
    assert [r.request_id for r in records[1:]] == ["r1", "r2"]
