"""Broker launchers: Kafka restart keeps data; Tansu serves the client; clear errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from devbrokers import KafkaJarBroker
from schemas import InferenceRequest, ReplyRecord
from streamer import (
    BrokerError,
    KafkaConfig,
    LoraClient,
    TansuBroker,
    TopicNames,
    TopicSpec,
    ensure_topics,
    start_consumer,
    start_producer,
)
from streamer.brokers import probe_metadata
from tests.streamer.fake_service import FakeService, echo, expected_echo


async def read_all(cfg: KafkaConfig, tp: TopicPartition, count: int) -> list[bytes]:
    consumer = await start_consumer(cfg, auto_offset_reset="earliest")
    consumer.assign([tp])
    values: list[bytes] = []
    try:
        async with asyncio.timeout(20):
            while len(values) < count:
                batches = await consumer.getmany(timeout_ms=200)
                values += [m.value for msgs in batches.values() for m in msgs]
    finally:
        await consumer.stop()
    return values


@pytest.fixture(scope="module")
async def tansu() -> AsyncIterator[TansuBroker]:
    async with TansuBroker() as broker:
        yield broker


async def test_client_round_trip_on_tansu(tansu: TansuBroker) -> None:
    """The embedded broker rejects idempotence: every producer we make must work there."""
    cfg = KafkaConfig(tansu.bootstrap_servers)
    names = TopicNames("tansu-test")

    def echo_or_hang(request: InferenceRequest) -> list[ReplyRecord]:
        return echo(request)[: 1 if request.prompt == "hang" else None]

    async with (
        FakeService(cfg, names, script=echo_or_hang) as service,
        LoraClient(config=cfg, topics=names) as client,
    ):
        texts = [r.text async for r in client.stream("hello", "ad/one")]
        async for _ in client.stream("hang", request_id="tansu-cancel"):
            break
        assert await service.next_cancel() == "tansu-cancel"
    assert texts[-1] == "".join(texts[:-1]) == expected_echo("hello", "ad/one")


def test_tansu_stop_and_start_again() -> None:
    broker = TansuBroker()
    try:
        assert broker.pid is None
        broker.start()
        address, first_pid = broker.bootstrap_servers, broker.pid
        assert first_pid is not None and Path(f"/proc/{first_pid}").exists()
        broker.stop()
        assert not broker.is_running and broker.pid is None
        broker.start()
        assert broker.is_running and broker.bootstrap_servers == address
        assert broker.pid not in (None, first_pid)
    finally:
        broker.close()
    assert not broker.workdir.exists()


def test_missing_jars_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(BrokerError, match="make kafka-jars"):
        KafkaJarBroker(tmp_path)


def test_missing_java_is_a_clear_error(tmp_path, monkeypatch) -> None:
    (tmp_path / "kafka_2.13-4.1.1.jar").touch()
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(BrokerError, match="java not found"):
        KafkaJarBroker(tmp_path)


@pytest.mark.kafka  # runs java
def test_a_broker_that_cannot_start_reports_its_log(tmp_path) -> None:
    (tmp_path / "kafka_2.13-0.0.0.jar").touch()  # a jar folder without Kafka in it
    broker = KafkaJarBroker(tmp_path, startup_timeout_s=30)
    try:
        with pytest.raises(BrokerError, match="format failed"):
            broker.start()
    finally:
        broker.close()


async def test_kafka_restart_keeps_port_data_and_clients(
    kafka_broker: KafkaJarBroker, topic_names: TopicNames
) -> None:
    cfg = KafkaConfig(kafka_broker.bootstrap_servers)
    address = kafka_broker.bootstrap_servers
    durable = TopicPartition(f"{topic_names.prefix}.durable", 0)
    await ensure_topics(cfg, [TopicSpec(durable.topic)])
    async with FakeService(cfg, topic_names), LoraClient(config=cfg, topics=topic_names) as client:
        producer = await start_producer(cfg)
        try:
            await producer.send_and_wait(durable.topic, b"before")
            assert (await client.generate("before")).text == expected_echo("before")
            try:
                await kafka_broker.astop()
                assert not kafka_broker.is_running
                assert not await probe_metadata(address)
                during = asyncio.create_task(client.generate("during", timeout_s=60))
            finally:
                await kafka_broker.astart()
            assert kafka_broker.bootstrap_servers == address
            await producer.send_and_wait(durable.topic, b"after")
            assert (await asyncio.wait_for(during, 60)).text == expected_echo("during")
            assert (await client.generate("after")).text == expected_echo("after")
        finally:
            await producer.stop()
    assert await read_all(cfg, durable, 2) == [b"before", b"after"]


def test_cluster_ids_never_start_with_a_dash():
    from devbrokers.kafka_jars import _cluster_id

    ids = [_cluster_id() for _ in range(2000)]
    assert not any(i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids) and all(len(i) == 22 for i in ids)
