"""Topic administration against real Kafka."""

from __future__ import annotations

import asyncio

import pytest

from streamer import (
    KafkaConfig,
    TopicAdminError,
    TopicInfo,
    TopicNames,
    TopicSpec,
    default_topic_specs,
    delete_topics,
    describe_topics,
    ensure_topics,
    list_topics,
    topic_configs,
)


async def test_ensure_topics_is_idempotent(
    kafka_config: KafkaConfig, topic_names: TopicNames
) -> None:
    specs = default_topic_specs(topic_names, request_partitions=3)
    created = await ensure_topics(kafka_config, specs)
    assert sorted(created) == sorted(s.name for s in specs)
    assert await ensure_topics(kafka_config, specs) == []
    assert await list_topics(kafka_config, prefix=topic_names.prefix) == sorted(created)
    infos = await describe_topics(kafka_config, [topic_names.requests, topic_names.control])
    assert infos == [TopicInfo(topic_names.requests, 3), TopicInfo(topic_names.control, 1)]


async def test_results_and_adapters_are_compacted(
    kafka_config: KafkaConfig, topic_names: TopicNames
) -> None:
    await ensure_topics(kafka_config, default_topic_specs(topic_names))
    for name in (topic_names.results, topic_names.adapters):
        assert (await topic_configs(kafka_config, name))["cleanup.policy"] == "compact"
    assert (await topic_configs(kafka_config, topic_names.requests))["cleanup.policy"] == "delete"


async def test_delete_topics(kafka_config: KafkaConfig, topic_prefix: str) -> None:
    name = f"{topic_prefix}.doomed"
    await ensure_topics(kafka_config, [TopicSpec(name)])
    assert await delete_topics(kafka_config, [name, f"{topic_prefix}.never"]) == [name]
    with pytest.raises(TopicAdminError):
        await delete_topics(kafka_config, [f"{topic_prefix}.never"], missing_ok=False)
    async with asyncio.timeout(10):
        while name in await list_topics(kafka_config, prefix=topic_prefix):
            await asyncio.sleep(0.05)  # deletion finishes asynchronously on the broker


async def test_refused_creation_raises(kafka_config: KafkaConfig, topic_prefix: str) -> None:
    bad = TopicSpec(f"{topic_prefix}.bad", configs={"cleanup.policy": "shred"})
    with pytest.raises(TopicAdminError, match="bad"):
        await ensure_topics(kafka_config, [bad])


@pytest.mark.parametrize(
    "kwargs", [dict(name="a b"), dict(name="t", partitions=0), dict(name="t", replication_factor=0)]
)
def test_topic_spec_is_validated(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        TopicSpec(**kwargs)
