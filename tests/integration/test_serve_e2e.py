"""End to end through Apache Kafka: client → requests topic → inference consumer → engine →
chunks + Final on the client's reply topic; greedy outputs equal PEFT's."""

from __future__ import annotations

import asyncio

import pytest

from schemas import Final, FinishReason, TokenChunk, decode_reply
from streamer import LoraClient, make_consumer
from tests.integration.conftest import ADAPTER_SPECS
from tests.integration.peft_oracle import greedy_tokens

pytestmark = pytest.mark.kafka

PROMPT = "the cat sat on the mat"
MAX_NEW = 12


@pytest.mark.parametrize("adapter_id", [None, *ADAPTER_SPECS])
async def test_stream_matches_peft_generate(serving, tiny_model, adapter_id):
    kafka, topics, _ = serving
    model_dir, adapter_root = tiny_model
    chunks: list[TokenChunk] = []
    final = None
    async with LoraClient(config=kafka, topics=topics) as client:
        async for record in client.stream(PROMPT, adapter_id=adapter_id, max_new_tokens=MAX_NEW):
            if isinstance(record, Final):
                final = record
            else:
                chunks.append(record)
    assert final is not None and chunks, "expected token chunks then a Final"
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert final.seq == len(chunks)
    ours = [t for c in chunks for t in c.token_ids]
    adapter_dir = None if adapter_id is None else adapter_root / adapter_id
    expected = greedy_tokens(model_dir, adapter_dir, PROMPT, MAX_NEW)
    assert ours == expected
    assert final.text == "".join(c.text for c in chunks)
    assert final.usage.completion_tokens == len(ours)
    assert final.finish_reason in (FinishReason.LENGTH, FinishReason.EOS)
    assert final.adapter_id == adapter_id
    assert 0 <= final.timings.queue_ms <= final.timings.ttft_ms <= final.timings.total_ms


async def test_adapters_change_the_output(serving):
    kafka, topics, _ = serving
    async with LoraClient(config=kafka, topics=topics) as client:
        finals = await asyncio.gather(
            *(client.generate(PROMPT, adapter_id=a, max_new_tokens=MAX_NEW) for a in [None, *ADAPTER_SPECS])
        )
    texts = [f.text for f in finals]
    assert len(set(texts)) == 3, texts


async def test_many_concurrent_requests_on_one_client(serving):
    kafka, topics, _ = serving
    adapters = [None, *ADAPTER_SPECS] * 10
    async with LoraClient(config=kafka, topics=topics) as client:
        finals = await asyncio.gather(
            *(client.generate(f"{PROMPT} {i}", adapter_id=a, max_new_tokens=6) for i, a in enumerate(adapters))
        )
    assert len({f.request_id for f in finals}) == len(adapters)
    assert [f.adapter_id for f in finals] == adapters
    assert all(f.usage.completion_tokens >= 1 for f in finals)


async def test_leaving_the_stream_cancels_on_the_server(serving):
    kafka, topics, service = serving
    async with LoraClient(config=kafka, topics=topics) as client:
        stream = client.stream(PROMPT, max_new_tokens=900, request_id="cancel-me")
        async for record in stream:
            assert isinstance(record, TokenChunk)
            break
        await stream.aclose()
        results = make_consumer(kafka, topics.results)
        await results.start()
        try:
            async with asyncio.timeout(30):
                async for message in results:
                    final = decode_reply(message.value)
                    if final.request_id == "cancel-me":
                        break
        finally:
            await results.stop()
    assert isinstance(final, Final) and final.finish_reason is FinishReason.CANCELLED
    assert final.usage.completion_tokens < 900
