"""Where replies go: a private topic per client, or an assigned partition of a shared topic."""

from __future__ import annotations

import asyncio

from schemas import Final, FinishReason, ReplyAddress
from streamer import (
    KafkaConfig,
    LoraClient,
    TopicNames,
    TopicSpec,
    ensure_topics,
    list_topics,
    topic_configs,
)
from tests.streamer.fake_service import FakeService, expected_echo


async def test_private_reply_topic_lives_as_long_as_the_client(
    kafka_config: KafkaConfig, topic_names: TopicNames
) -> None:
    reply_topic = topic_names.replies_for("c-one")
    async with (
        FakeService(kafka_config, topic_names),
        LoraClient(config=kafka_config, topics=topic_names, client_id="c-one") as client,
    ):
        assert client.reply_to == ReplyAddress(reply_topic, 0)
        assert reply_topic in await list_topics(kafka_config, prefix=topic_names.prefix)
        assert int((await topic_configs(kafka_config, reply_topic))["retention.ms"]) <= 3_600_000
        assert (await client.generate("hi")).text == expected_echo("hi")
    async with asyncio.timeout(10):
        while reply_topic in await list_topics(kafka_config, prefix=topic_names.prefix):
            await asyncio.sleep(0.05)


async def test_shared_reply_topic_partitions_start_at_the_end(
    kafka_config: KafkaConfig, topic_names: TopicNames
) -> None:
    shared = f"{topic_names.prefix}.replies"
    await ensure_topics(kafka_config, [TopicSpec(shared, partitions=2)])
    async with FakeService(kafka_config, topic_names) as service:
        # an old answer with the same request_id sits in partition 1 from a previous run
        stale = Final("reused-id", 0, 0, FinishReason.EOS, "stale answer")
        await service.send(ReplyAddress(shared, 1), [stale])
        clients = [
            LoraClient(config=kafka_config, topics=topic_names, reply_topic=shared,
                       reply_partition=p)
            for p in (0, 1)
        ]  # fmt: skip
        async with clients[0] as first, clients[1] as second:
            finals = await asyncio.gather(
                first.generate("to zero"), second.generate("to one", request_id="reused-id")
            )
            assert second.num_ignored_records == 0  # never saw the stale record
        assert shared in await list_topics(kafka_config, prefix=topic_names.prefix)
    assert [f.text for f in finals] == [expected_echo("to zero"), expected_echo("to one")]
