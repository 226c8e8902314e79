"""The `bus` fixture: each scenario runs on the in-memory bus and, marked `kafka`, on Apache Kafka."""

from __future__ import annotations

import pytest

from streamer import KafkaConfig, TopicNames
from streamer.transport.kafka import KafkaTransport
from streamer.transport.memory import MemoryTransport
from tests.consumers.scenarios.harness import Bus, new_prefix


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.kafka)])
async def bus(request):
    topics = TopicNames(new_prefix())
    if request.param == "memory":
        bus = Bus("memory", MemoryTransport(), topics)
    else:
        kafka = KafkaConfig(bootstrap_servers=request.getfixturevalue("kafka_bootstrap"), client_id="lorastream-tests")
        bus = Bus("kafka", KafkaTransport(kafka), topics, kafka=kafka)
    yield bus
    await bus.stop_services()


@pytest.fixture
async def memory_bus():
    """Scenarios that need fault injection, which a real broker cannot be told to do."""
    bus = Bus("memory", MemoryTransport(), TopicNames(new_prefix()))
    yield bus
    await bus.stop_services()
