"""Stop and restart the Kafka broker during a load of 120 requests: nothing is lost."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from schemas import Final
from streamer import KafkaConfig, LoraClient, TopicNames
from tests.integration.conftest import ADAPTER_SPECS

pytestmark = pytest.mark.kafka

NUM_REQUESTS = 120


async def test_broker_restart_under_load(kafka_broker, topic_prefix, serve_process, report_counts):
    kafka = KafkaConfig(bootstrap_servers=kafka_broker.bootstrap_servers)
    topics = TopicNames(topic_prefix)
    serve_process("restart-a")
    adapters = [None, *ADAPTER_SPECS]
    finals: Counter[str] = Counter()
    texts: dict[str, str] = {}
    some_done = asyncio.Event()

    async def one(client: LoraClient, i: int) -> None:
        rid = f"load-{i}"
        parts = []
        async for record in client.stream(
            f"tale {i}", adapter_id=adapters[i % 3], max_new_tokens=48, request_id=rid, timeout_s=240
        ):
            if isinstance(record, Final):
                finals[rid] += 1
                texts[rid] = "".join(parts)
                assert record.text == texts[rid]
                if len(finals) >= 10:
                    some_done.set()
            else:
                parts.append(record.text)

    async with LoraClient(config=kafka, topics=topics, request_timeout_s=300) as client:
        tasks = [asyncio.create_task(one(client, i)) for i in range(NUM_REQUESTS)]
        await asyncio.wait_for(some_done.wait(), 120)
        answered_before = len(finals)
        await asyncio.to_thread(kafka_broker.stop)
        await asyncio.sleep(2.0)  # the outage itself: nothing to wait for but time
        await asyncio.to_thread(kafka_broker.start)
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 300)

    errors = [r for r in results if isinstance(r, BaseException)]
    lost = NUM_REQUESTS - len(finals)
    duplicates = sum(n - 1 for n in finals.values())
    report_counts(f"broker restart: answered before stop={answered_before} lost={lost} "
        f"duplicates={duplicates} client errors={len(errors)}"
    )
    assert errors == [] and lost == 0 and duplicates == 0
