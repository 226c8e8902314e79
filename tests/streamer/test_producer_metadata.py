"""The transport's producer stops asking for the metadata of topics that are gone or idle.

aiokafka's producer asks the broker, on every metadata refresh, for every topic it ever sent to;
left alone, the service would ask for each dead client's reply topic forever.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import UnknownTopicOrPartitionError

from streamer import TopicSpec, delete_topics, ensure_topics
from streamer.transport.kafka import KafkaTransport


async def test_a_topic_found_missing_or_idle_leaves_the_producers_metadata(kafka_config, topic_names) -> None:
    busy, gone = topic_names.replies_for("busy"), topic_names.replies_for("gone")
    await ensure_topics(kafka_config, [TopicSpec(busy), TopicSpec(gone)])
    producer = KafkaTransport(kafka_config, metadata_wait_s=0.5, forget_idle_s=1.0).producer()
    await producer.start()
    try:
        for topic in (busy, gone):
            await (await producer.send(topic, b"x"))
        assert {busy, gone} <= producer.tracked_topics

        await delete_topics(kafka_config, [gone])
        await producer._producer.client.force_metadata_update()  # as the next refresh would
        with pytest.raises(UnknownTopicOrPartitionError):
            await producer.send(gone, b"x")
        assert gone not in producer.tracked_topics

        results = topic_names.results
        await ensure_topics(kafka_config, [TopicSpec(results)])
        await asyncio.sleep(1.2)  # `busy` is now idle longer than forget_idle_s
        await (await producer.send(results, b"x"))
        assert busy not in producer.tracked_topics and results in producer.tracked_topics
        await (await producer.send(busy, b"again"))  # a forgotten topic is asked for again when used
    finally:
        await producer.stop()
