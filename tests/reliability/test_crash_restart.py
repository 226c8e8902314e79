"""SIGKILL the inference consumer with ≥ 50 requests in flight, start a new one: every request
reaches the client exactly once as a Final, and no chunk text is yielded twice."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from schemas import Final
from streamer import KafkaConfig, LoraClient, TopicNames
from tests.integration.conftest import ADAPTER_SPECS

pytestmark = pytest.mark.kafka

NUM_REQUESTS = 64
MAX_NEW = 200


async def test_sigkill_with_requests_in_flight(kafka_bootstrap, topic_prefix, serve_process, report_counts):
    kafka, topics = KafkaConfig(bootstrap_servers=kafka_bootstrap), TopicNames(topic_prefix)
    first = serve_process("node-a")
    adapters = [None, *ADAPTER_SPECS]
    yielded: dict[str, list[str]] = {}
    finals: Counter[str] = Counter()
    final_by_id: dict[str, Final] = {}
    streaming = asyncio.Event()

    async def one(client: LoraClient, i: int) -> None:
        rid = f"req-{i}"
        yielded[rid] = []
        async for record in client.stream(
            f"story {i} begins", adapter_id=adapters[i % 3], max_new_tokens=MAX_NEW,
            request_id=rid, timeout_s=120,
        ):
            if isinstance(record, Final):
                finals[rid] += 1
                final_by_id[rid] = record
            else:
                yielded[rid].append(record.text)
                if sum(1 for parts in yielded.values() if parts) >= NUM_REQUESTS // 2:
                    streaming.set()

    async with LoraClient(config=kafka, topics=topics, request_timeout_s=180) as client:
        tasks = [asyncio.create_task(one(client, i)) for i in range(NUM_REQUESTS)]
        await asyncio.wait_for(streaming.wait(), 120)
        in_flight = NUM_REQUESTS - len(finals)
        first.kill()
        serve_process("node-a")  # same static member id: takes the partitions back at once
        await asyncio.wait_for(asyncio.gather(*tasks), 240)

    lost = [rid for rid in yielded if finals[rid] == 0]
    duplicate_finals = [rid for rid, n in finals.items() if n > 1]
    duplicate_text = [rid for rid, parts in yielded.items() if "".join(parts) != final_by_id[rid].text]
    reserved = sum(1 for f in final_by_id.values() if f.attempt >= 2)
    report_counts(f"crash test: in flight at SIGKILL={in_flight} lost={len(lost)} "
        f"duplicate finals={len(duplicate_finals)} duplicated/missing text={len(duplicate_text)} "
        f"re-served (attempt>=2)={reserved}"
    )
    assert in_flight >= 50
    assert lost == [] and duplicate_finals == [] and duplicate_text == []
    assert reserved >= 1, "the new consumer should have re-served the unanswered requests"
