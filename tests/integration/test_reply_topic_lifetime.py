"""Issue 17 item 4: a reply topic deleted by its client stays deleted while the service runs.

The cause reproduced: a broker that auto-creates topics (Tansu always; Apache Kafka with its
default `auto.create.topics.enable=true`) creates every topic a metadata request names with
`allow_auto_topic_creation` set, which aiokafka sets on every request. The service's producer asks
for every topic it ever answered to on each metadata refresh (and whenever it first sends to a
new topic), and its reply-topic directory describes the reply topic of each new request: both
brought back the topic a closed client had deleted. Both brokers here auto-create.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

import pytest

from consumers.config import ServeConfig
from consumers.inference import InferenceService
from consumers.serve import build_engine_thread
from devbrokers import KafkaJarBroker
from streamer import KafkaConfig, LoraClient, TansuBroker, TopicNames, list_topics
from streamer.transport.kafka import KafkaTransport
from tests.conftest import ROOT

METADATA_MAX_AGE_MS = 200  # the service's producer refreshes its metadata five times a second


@pytest.fixture(scope="module", params=["tansu", "apache-kafka-auto-create"])
async def auto_creating_broker(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    if request.param == "tansu":
        async with TansuBroker() as broker:
            yield broker.bootstrap_servers
        return
    libs_dir = os.environ.get("LORASTREAM_KAFKA_LIBS") or ROOT / ".cache" / "kafka" / "libs"
    broker = KafkaJarBroker(libs_dir, auto_create_topics=True)
    broker.start()
    try:
        yield broker.bootstrap_servers
    finally:
        broker.close()


async def reply_topics(kafka: KafkaConfig, topics: TopicNames) -> list[str]:
    return await list_topics(kafka, prefix=f"{topics.prefix}.replies.")


async def settled_reply_topics(kafka: KafkaConfig, topics: TopicNames, expected: list[str]) -> list[str]:
    """The reply topics once a deletion has propagated (a broker under load lists a deleted topic
    for a moment): the listing as soon as it equals `expected`, else the last one after 10 s."""
    deadline = time.monotonic() + 10
    while (found := await reply_topics(kafka, topics)) != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    return found


async def test_a_closed_clients_reply_topic_stays_deleted(auto_creating_broker, tiny_model, topic_prefix) -> None:
    model_dir, adapter_root = tiny_model
    kafka = KafkaConfig(bootstrap_servers=auto_creating_broker)
    topics = TopicNames(topic_prefix)
    runner = build_engine_thread(model_path=str(model_dir), adapter_root=str(adapter_root), device="cpu")
    transport = KafkaTransport(kafka, metadata_max_age_ms=METADATA_MAX_AGE_MS)
    service = InferenceService(transport, topics, ServeConfig(request_partitions=2), runner)
    task = asyncio.create_task(service.run())
    try:
        await asyncio.wait_for(service.ready.wait(), 60)
        async with LoraClient(config=kafka, topics=topics, client_id="first") as first:
            assert (await first.generate("hello", max_new_tokens=3)).text is not None
        dead = first.reply_to
        assert await settled_reply_topics(kafka, topics, []) == []

        # A new client: its first answer makes the service's producer refresh the metadata of
        # every topic it tracks; a request naming the dead topic makes the service look it up.
        async with LoraClient(config=kafka, topics=topics, client_id="second") as second:
            await second.generate("hello", max_new_tokens=3)
            request_id = await second.submit("to nobody", reply_to=dead, max_new_tokens=3)
            await _answered_in_results(kafka, topics, request_id)
            await asyncio.sleep(3)  # the service's send to the dead topic waits 2 s for its metadata
            assert await settled_reply_topics(kafka, topics, [second.reply_to.topic]) == [second.reply_to.topic]
        await asyncio.sleep(10 * METADATA_MAX_AGE_MS / 1000)  # many refreshes of the producer's metadata
        assert await settled_reply_topics(kafka, topics, []) == []
    finally:
        service.stop()
        await asyncio.wait_for(task, 60)


async def _answered_in_results(kafka: KafkaConfig, topics: TopicNames, request_id: str) -> None:
    """Wait for the service's copy of the answer to `request_id` on the results topic."""
    from schemas import decode_reply
    from streamer import start_consumer

    consumer = await start_consumer(kafka, topics.results, auto_offset_reset="earliest")
    try:
        async with asyncio.timeout(90):  # generous: a loaded CI machine runs a second broker here
            while True:
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    if any(decode_reply(r.value or b"").request_id == request_id for r in records):
                        return
    finally:
        await consumer.stop()
