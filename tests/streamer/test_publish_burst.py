"""A burst of concurrent submits travels in large producer batches, and the broker takes them."""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition

from streamer import (
    KafkaConfig,
    LoraClient,
    TopicNames,
    TopicSpec,
    ensure_topics,
    make_producer,
)
from streamer.kafka import PRODUCER_MAX_BATCH_BYTES, start_consumer

NUM_REQUESTS = 1000
PROMPT_CHARS = 600  # 1000 requests on one partition: ~0.7 MB, so batches fill past 256 KiB


async def test_producer_batches_are_large_and_overridable() -> None:
    producer = make_producer(KafkaConfig("127.0.0.1:1"))
    assert producer._message_accumulator._batch_size == PRODUCER_MAX_BATCH_BYTES >= 256 * 1024
    small = make_producer(KafkaConfig("127.0.0.1:1"), max_batch_size=16384)
    assert small._message_accumulator._batch_size == 16384


async def test_concurrent_submits_are_all_published(
    kafka_config: KafkaConfig, topic_names: TopicNames
) -> None:
    await ensure_topics(kafka_config, [TopicSpec(topic_names.requests, 1)])
    async with LoraClient(config=kafka_config, topics=topic_names) as client:
        ids = await asyncio.wait_for(
            asyncio.gather(
                *(client.submit(f"{i:05d}" + "x" * PROMPT_CHARS, "a/one") for i in range(NUM_REQUESTS))
            ),
            60,
        )
    assert len(set(ids)) == NUM_REQUESTS
    consumer = await start_consumer(kafka_config)
    try:
        tp = TopicPartition(topic_names.requests, 0)
        end = await consumer.end_offsets([tp])
    finally:
        await consumer.stop()
    assert end[tp] == NUM_REQUESTS
