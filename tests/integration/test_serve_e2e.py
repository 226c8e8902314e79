"""End to end through Apache Kafka: client → requests topic → inference consumer → engine →
chunks + Final on the client's reply topic; greedy outputs equal PEFT's."""

from __future__ import annotations

import asyncio
import time
import urllib.request

import msgspec
import pytest

from consumers.config import ServeConfig
from consumers.inference import InferenceService
from streamer.transport.kafka import KafkaTransport
from consumers.serve import build_engine_thread
from schemas import ErrorCode, Final, FinishReason, TokenChunk, decode_reply
from streamer import KafkaConfig, LoraClient, RequestFailed, TopicNames, make_consumer
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


async def test_past_deadline_is_answered_expired_without_computing(serving):
    kafka, topics, service = serving
    async with LoraClient(config=kafka, topics=topics) as client:
        request = client.build_request(PROMPT, max_new_tokens=5, request_id="too-late")
        request = msgspec.structs.replace(request, deadline_ms=int(time.time() * 1000) - 1)
        with pytest.raises(RequestFailed) as info:
            async for _ in client.stream_request(request):
                pass
    assert info.value.code is ErrorCode.EXPIRED
    assert 'code="expired"' in service.metrics.render().decode()


async def test_metrics_and_health_endpoints(kafka_bootstrap, topic_prefix, tiny_model):
    model_dir, adapter_root = tiny_model
    kafka, topics = KafkaConfig(bootstrap_servers=kafka_bootstrap), TopicNames(topic_prefix)
    runner = build_engine_thread(model_path=str(model_dir), adapter_root=str(adapter_root), device="cpu")
    service = InferenceService(KafkaTransport(kafka), topics, ServeConfig(metrics_port=0, request_partitions=1), runner)
    task = asyncio.create_task(service.run())
    await asyncio.wait_for(service.ready.wait(), 60)
    async with LoraClient(config=kafka, topics=topics) as client:
        await client.generate(PROMPT, adapter_id="acme/sentiment", max_new_tokens=4)
        await client.generate(PROMPT, adapter_id="acme/sentiment", max_new_tokens=4)
    port = service.health.port
    scrape = await asyncio.to_thread(_get, port, "/metrics")
    health = await asyncio.to_thread(_get, port, "/healthz")
    ready = await asyncio.to_thread(_get, port, "/readyz")
    service.stop()
    await asyncio.wait_for(task, 60)
    assert health == "ok\n" and ready == "ready\n"
    assert 'lorastream_requests_total{adapter="acme/sentiment"} 2.0' in scrape
    assert 'lorastream_completion_tokens_total{adapter="acme/sentiment"} 8.0' in scrape
    assert 'lorastream_ttft_ms_count{adapter="acme/sentiment"} 2.0' in scrape
    # the first request's adapter came from the store, the second found it on the device
    assert 'lorastream_adapter_tier_requests_total{adapter="acme/sentiment",tier="store"} 1.0' in scrape
    assert 'lorastream_adapter_tier_requests_total{adapter="acme/sentiment",tier="device"} 1.0' in scrape
    assert 'lorastream_adapter_cache_hits_total{tier="device"}' in scrape


def _get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.read().decode()
