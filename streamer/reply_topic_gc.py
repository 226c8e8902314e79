"""Private reply topics whose client is gone: how long each has been idle, and deleting the idle.

A client deletes its private reply topic (`<prefix>.replies.<client_id>`) when it closes; one
that dies without closing leaves it. A live client proves it is alive by writing a heartbeat
record (key `HEARTBEAT_KEY`, no value) to its own topic when it creates it and every
`HEARTBEAT_INTERVAL_S` after (streamer/client_connection.py), so a topic's newest record is never
older than that while its client lives. `collect_idle_reply_topics` (`lorastream topics gc`)
deletes the single-partition reply topics whose newest record is older than `idle_s`, and those
still without any record after `settle_s` (a client killed between creating its topic and its
first heartbeat, or a topic a broker auto-created). Shared reply topics (several partitions) are
never touched.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from aiokafka import TopicPartition

from streamer.admin import delete_topics, describe_topics, list_topics
from streamer.config import KafkaConfig, TopicNames
from streamer.kafka import start_consumer

log = logging.getLogger(__name__)

HEARTBEAT_KEY = b"lorastream.heartbeat"
HEARTBEAT_INTERVAL_S = 30.0
DEFAULT_IDLE_S = 300.0  # ten missed heartbeats
DEFAULT_SETTLE_S = 10.0  # how long a topic without records may take to get its first heartbeat
_READ_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ReplyTopicAge:
    name: str
    idle_s: float | None  # since its newest record; None when it holds no record (or it could not be read)


def reply_topic_prefix(topics: TopicNames) -> str:
    """What every private reply topic's name starts with: `<prefix>.replies.`."""
    return f"{topics.prefix}.replies."


async def reply_topic_ages(cfg: KafkaConfig, topics: TopicNames) -> list[ReplyTopicAge]:
    """Every private reply topic of `topics.prefix` (one partition) and how long it has been idle."""
    names = await list_topics(cfg, prefix=reply_topic_prefix(topics))
    infos = await describe_topics(cfg, names) if names else []
    private = [info.name for info in infos if info.partitions == 1]
    newest_ms = await newest_record_times_ms(cfg, private)
    now_ms = time.time() * 1000
    return [
        ReplyTopicAge(name, None if newest_ms.get(name) is None else max(0.0, (now_ms - newest_ms[name]) / 1000))
        for name in private
    ]


async def newest_record_times_ms(cfg: KafkaConfig, names: list[str]) -> dict[str, int | None]:
    """The timestamp of the newest record in partition 0 of each topic; None for an empty one."""
    found: dict[str, int | None] = dict.fromkeys(names)
    if not names:
        return found
    tps = [TopicPartition(name, 0) for name in names]
    consumer = await start_consumer(cfg, auto_offset_reset="earliest")
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        begins = await consumer.beginning_offsets(tps)
        pending = {tp for tp in tps if ends.get(tp, 0) > begins.get(tp, 0)}
        for tp in tps:
            if tp in pending:
                consumer.seek(tp, ends[tp] - 1)
        consumer.pause(*(tp for tp in tps if tp not in pending))
        deadline_s = time.monotonic() + _READ_TIMEOUT_S
        while pending and time.monotonic() < deadline_s:
            batches = await consumer.getmany(*pending, timeout_ms=200)
            for tp, records in batches.items():
                if records:
                    found[tp.topic] = max(record.timestamp for record in records)
                    pending.discard(tp)
                    consumer.pause(tp)
        for tp in pending:  # unread in time: no proof of idleness, so treat it as busy
            log.warning("could not read the newest record of %s", tp.topic)
            found[tp.topic] = int(time.time() * 1000)
    finally:
        await consumer.stop()
    return found


async def collect_idle_reply_topics(
    cfg: KafkaConfig,
    topics: TopicNames,
    *,
    idle_s: float = DEFAULT_IDLE_S,
    settle_s: float = DEFAULT_SETTLE_S,
    dry_run: bool = False,
) -> list[str]:
    """Delete (unless `dry_run`) the private reply topics no live client claims; return their names."""
    if idle_s <= 0 or settle_s < 0:
        raise ValueError("idle_s must be > 0 and settle_s >= 0")
    ages = await reply_topic_ages(cfg, topics)
    idle = [age.name for age in ages if age.idle_s is not None and age.idle_s > idle_s]
    empty = [age.name for age in ages if age.idle_s is None]
    if empty:
        await asyncio.sleep(settle_s)
        again = await newest_record_times_ms(cfg, empty)
        idle += [name for name in empty if again[name] is None]
    idle.sort()
    if idle and not dry_run:
        await delete_topics(cfg, idle)
        log.info("deleted idle reply topics %s", ", ".join(idle))
    return idle
