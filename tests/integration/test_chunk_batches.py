"""Chunk batching on the wire, through Apache Kafka: concurrent streams of one client share
ChunkBatch records, a request that did not ask for batches gets plain TokenChunks, and every
stream's text arrives whole and in order before its Final."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from aiokafka import TopicPartition

from schemas import ChunkBatch, Final, TokenChunk, decode_reply
from streamer import LoraClient
from streamer.kafka import start_consumer

pytestmark = pytest.mark.kafka

PROMPTS = [f"the cat number {i} sat on the mat" for i in range(8)]


async def _stream_text(client: LoraClient, request) -> tuple[str, Final]:
    text, final = "", None
    async for record in client.stream_request(request):
        if isinstance(record, Final):
            final = record
        else:
            text += record.text
    return text, final


async def test_concurrent_streams_share_records_and_old_clients_get_plain_chunks(serving):
    kafka, topics, _ = serving
    async with LoraClient(config=kafka, topics=topics) as client:
        reply = TopicPartition(client.reply_to.topic, client.reply_to.partition or 0)
        wire = await start_consumer(kafka)
        try:
            wire.assign([reply])
            await wire.seek_to_end(reply)
            await wire.position(reply)
            batched = [client.build_request(p, adapter_id="acme/sentiment", max_new_tokens=12) for p in PROMPTS]
            plain = msgspec.structs.replace(
                client.build_request(PROMPTS[0], max_new_tokens=12, request_id="plain-one"), batch_chunks=False
            )
            assert all(r.batch_chunks for r in batched)
            results = await asyncio.gather(*(_stream_text(client, r) for r in [*batched, plain]))
            for text, final in results:
                assert final is not None and text == final.text  # whole, in order, before the Final
            records = []
            finals = 0
            while finals < len(results):
                for messages in (await wire.getmany(timeout_ms=5000)).values():
                    for message in messages:
                        record = decode_reply(message.value)
                        records.append(record)
                        finals += isinstance(record, Final)
        finally:
            await wire.stop()
    batches = [r for r in records if isinstance(r, ChunkBatch)]
    assert batches, "concurrent streams of one client should share at least one record"
    assert all("plain-one" not in {c.request_id for c in b.chunks} for b in batches)
    assert any(isinstance(r, TokenChunk) and r.request_id == "plain-one" for r in records)
    chunks = sum(len(b.chunks) for b in batches) + sum(isinstance(r, TokenChunk) for r in records)
    print(f"\n{chunks} chunks in {len(records) - finals} records ({len(batches)} batches)")
    assert len(records) - finals < chunks
