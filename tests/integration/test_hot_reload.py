"""Adapter registry through Apache Kafka: a new version published on the compacted adapters
topic is served without a restart (tokens equal PEFT's for that version), a request already
running finishes on the version it started with, bad registrations get typed errors, and a
retired adapter is refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from schemas import AdapterEvent, ErrorCode, TokenChunk, encode
from streamer import LoraClient, RequestFailed, start_producer
from tests.integration.conftest import ADAPTER_SPECS
from tests.integration.peft_oracle import greedy_tokens

pytestmark = pytest.mark.kafka

ADAPTER = "acme/sentiment"
PROMPT = "the cat sat on the mat"
MAX_NEW = 10


@pytest.fixture(scope="module")
def version_two(tiny_model) -> Path:
    """acme/sentiment retrained: same shape, other weights, in a directory of its own under the adapter
    root (registry uris must stay inside the configured roots)."""
    from gpu_engine.tiny import build_tiny_adapter

    model_dir, adapter_root = tiny_model
    spec = {**ADAPTER_SPECS[ADAPTER], "seed": 99}
    return build_tiny_adapter(model_dir, adapter_root / "hot-reload-v2" / ADAPTER, **spec)


async def _publish(kafka, topics, event: AdapterEvent | None, key: str) -> None:
    producer = await start_producer(kafka)
    try:
        value = None if event is None else encode(event)
        await producer.send_and_wait(topics.adapters, value, key=key.encode())
    finally:
        await producer.stop()


async def _applied(service, adapter_id: str, version: int | None, timeout_s: float = 20.0) -> None:
    """Wait until the service's registry listener has applied `version` (None: retired)."""
    async def poll() -> None:
        while service.adapters_topic.versions.get(adapter_id) != version:
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout_s)


async def _greedy(client: LoraClient, **kwargs) -> list[int]:
    tokens: list[int] = []
    async for record in client.stream(PROMPT, adapter_id=ADAPTER, max_new_tokens=MAX_NEW, **kwargs):
        if isinstance(record, TokenChunk):
            tokens.extend(record.token_ids)
    return tokens


async def test_a_new_version_is_served_without_restart(serving, tiny_model, version_two):
    from gpu_engine.adapter_files import adapter_checksum

    kafka, topics, service = serving
    model_dir, adapter_root = tiny_model
    v1 = greedy_tokens(model_dir, adapter_root / ADAPTER, PROMPT, MAX_NEW)
    v2 = greedy_tokens(model_dir, version_two, PROMPT, MAX_NEW)
    assert v1 != v2, "the two versions must differ for this test to mean anything"
    long_v1 = greedy_tokens(model_dir, adapter_root / ADAPTER, PROMPT, 120)
    async with LoraClient(config=kafka, topics=topics) as client:
        assert await _greedy(client) == v1
        # a long v1 generation is running when version 2 arrives
        running = client.stream(PROMPT, adapter_id=ADAPTER, max_new_tokens=120)
        first = await running.__anext__()
        assert isinstance(first, TokenChunk)
        event = AdapterEvent(ADAPTER, version=2, uri=version_two.as_uri(), checksum=adapter_checksum(version_two))
        await _publish(kafka, topics, event, ADAPTER)
        await _applied(service, ADAPTER, 2)
        assert await _greedy(client) == v2
        tokens = list(first.token_ids)
        async for record in running:
            if isinstance(record, TokenChunk):
                tokens.extend(record.token_ids)
        assert tokens == long_v1[: len(tokens)] and len(tokens) >= 1


async def test_bad_registrations_and_retirement_get_typed_errors(serving, tiny_model, version_two):
    kafka, topics, service = serving
    async with LoraClient(config=kafka, topics=topics) as client:
        wrong_sum = AdapterEvent(ADAPTER, version=3, uri=version_two.as_uri(), checksum="0" * 64)
        await _publish(kafka, topics, wrong_sum, ADAPTER)
        await _applied(service, ADAPTER, 3)
        with pytest.raises(RequestFailed) as info:
            await client.generate(PROMPT, adapter_id=ADAPTER, max_new_tokens=4, timeout_s=30)
        assert info.value.code is ErrorCode.ADAPTER_CHECKSUM_MISMATCH
        # other adapters are unaffected meanwhile
        other = await client.generate(PROMPT, adapter_id="acme/summary", max_new_tokens=4, timeout_s=30)
        assert other.usage.completion_tokens >= 1
        missing = AdapterEvent(ADAPTER, version=4, uri=(version_two.parent / "nowhere").as_uri())
        await _publish(kafka, topics, missing, ADAPTER)
        await _applied(service, ADAPTER, 4)
        with pytest.raises(RequestFailed) as info:
            await client.generate(PROMPT, adapter_id=ADAPTER, max_new_tokens=4, timeout_s=30)
        assert info.value.code in (ErrorCode.ADAPTER_NOT_FOUND, ErrorCode.ADAPTER_MISSING_FILE)
        await _publish(kafka, topics, None, ADAPTER)  # tombstone: retired
        await _applied(service, ADAPTER, None)
        with pytest.raises(RequestFailed) as info:
            await client.generate(PROMPT, adapter_id=ADAPTER, max_new_tokens=4, timeout_s=30)
        assert info.value.code is ErrorCode.ADAPTER_NOT_FOUND
