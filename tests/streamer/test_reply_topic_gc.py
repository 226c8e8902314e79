"""Private reply topics do not outlive their clients (issue 17 item 4), on Apache Kafka.

A closing client deletes its topic; a killed one leaves it, and `collect_idle_reply_topics`
(`lorastream topics gc`) deletes it once it has been idle `idle_s`, while the topic of a live
client (which writes a heartbeat every interval) survives any gc run.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import textwrap

from schemas import ReplyAddress
from streamer import KafkaConfig, LoraClient, TopicNames, TopicSpec, default_topic_specs, ensure_topics, list_topics
from streamer.client_connection import ClientConnection
from streamer.reply_topic_gc import collect_idle_reply_topics, reply_topic_ages
from tests.conftest import ROOT

NUM_CYCLES = 5


async def reply_topics(kafka: KafkaConfig, topics: TopicNames) -> list[str]:
    return await list_topics(kafka, prefix=f"{topics.prefix}.replies.")


async def test_open_close_cycles_leave_as_many_reply_topics_as_before(kafka_config, topic_names) -> None:
    await ensure_topics(kafka_config, default_topic_specs(topic_names))
    before = await reply_topics(kafka_config, topic_names)
    for cycle in range(NUM_CYCLES):
        async with LoraClient(config=kafka_config, topics=topic_names, client_id=f"c{cycle}") as client:
            assert client.reply_to.topic in await reply_topics(kafka_config, topic_names)
    assert await reply_topics(kafka_config, topic_names) == before


async def test_a_client_whose_start_is_cut_short_deletes_its_topic(kafka_config, topic_names, monkeypatch) -> None:
    """Cut while it reads the routes, after the topic is made (as Ctrl-C does to `lorastream send`).

    The start is held there: cancelling once the topic is listed raced a start that had already
    finished by the time the listing returned, and then nothing was cut short."""
    await ensure_topics(kafka_config, default_topic_specs(topic_names))
    reached = asyncio.Event()

    async def held_start_routes(self) -> None:
        reached.set()
        await asyncio.sleep(3600)

    monkeypatch.setattr(ClientConnection, "_start_routes", held_start_routes)
    client = LoraClient(config=kafka_config, topics=topic_names, client_id="cut")
    start = asyncio.create_task(client.start())
    async with asyncio.timeout(30):
        await reached.wait()
    assert client.reply_to.topic in await reply_topics(kafka_config, topic_names)
    start.cancel()
    (outcome,) = await asyncio.gather(start, return_exceptions=True)
    assert isinstance(outcome, asyncio.CancelledError)
    assert await reply_topics(kafka_config, topic_names) == []


async def _killed_client(kafka: KafkaConfig, topics: TopicNames, client_id: str) -> str:
    """Start a LoraClient in a subprocess, SIGKILL it once it is open; return its reply topic."""
    script = textwrap.dedent(f"""
        import asyncio, sys
        from streamer import KafkaConfig, LoraClient, TopicNames

        async def main():
            async with LoraClient(config=KafkaConfig({kafka.bootstrap_servers!r}),
                                  topics=TopicNames({topics.prefix!r}), client_id={client_id!r}):
                print("open", flush=True)
                await asyncio.sleep(3600)

        asyncio.run(main())
    """)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        assert line.strip() == b"open"
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
    return topics.replies_for(client_id)


async def test_gc_deletes_a_killed_clients_topic_and_spares_a_live_one(kafka_config, topic_names) -> None:
    await ensure_topics(kafka_config, default_topic_specs(topic_names))
    live = ClientConnection(
        kafka_config, ReplyAddress(topic_names.replies_for("live"), 0), owns_reply_topic=True,
        control_topic=topic_names.control, stats_topic=topic_names.adapter_stats, heartbeat_interval_s=0.3,
    )
    await live.start()
    try:
        dead = await _killed_client(kafka_config, topic_names, "killed")
        assert sorted(await reply_topics(kafka_config, topic_names)) == sorted([dead, live.reply_to.topic])

        # Not idle long enough yet: nothing goes.
        assert await collect_idle_reply_topics(kafka_config, topic_names, idle_s=60, settle_s=0) == []
        await asyncio.sleep(2.5)
        ages = {age.name: age.idle_s for age in await reply_topic_ages(kafka_config, topic_names)}
        assert ages[dead] > 2.0 and ages[live.reply_to.topic] < 2.0

        assert await collect_idle_reply_topics(kafka_config, topic_names, idle_s=2.0, settle_s=0) == [dead]
        assert await reply_topics(kafka_config, topic_names) == [live.reply_to.topic]
    finally:
        await live.stop()
    assert await reply_topics(kafka_config, topic_names) == []


async def test_gc_deletes_a_topic_still_empty_after_settling_and_never_a_shared_one(kafka_config, topic_names) -> None:
    empty, shared = topic_names.replies_for("never-beat"), topic_names.replies_for("shared")
    await ensure_topics(kafka_config, [TopicSpec(empty, 1), TopicSpec(shared, 4)])

    assert await collect_idle_reply_topics(kafka_config, topic_names, idle_s=600, settle_s=0.2, dry_run=True) == [empty]
    assert sorted(await reply_topics(kafka_config, topic_names)) == sorted([empty, shared])
    assert await collect_idle_reply_topics(kafka_config, topic_names, idle_s=600, settle_s=0.2) == [empty]
    assert await reply_topics(kafka_config, topic_names) == [shared]
