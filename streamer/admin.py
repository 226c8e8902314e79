"""Topic administration: the topics lorastream needs, created idempotently at start-up."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
    for_code,
)
from aiokafka.protocol.metadata import MetadataRequest

from schemas.limits import TOPIC_PATTERN
from streamer.config import KafkaConfig, TopicNames
from streamer.errors import TopicAdminError
from streamer.kafka import START_TIMEOUT_S
from streamer.retry import START_RETRY, retry_transient

log = logging.getLogger(__name__)

COMPACT = {"cleanup.policy": "compact"}
REPLY_RETENTION_MS = 10 * 60 * 1000  # replies are read within seconds; keep them briefly
_TOPIC_RE = re.compile(TOPIC_PATTERN)
_METADATA_POLL_S = 0.05


@dataclass(frozen=True)
class TopicSpec:
    """A topic to create: name, partition count, topic-level configs (strings, as Kafka wants)."""

    name: str
    partitions: int = 1
    configs: Mapping[str, str] = field(default_factory=dict)
    replication_factor: int = 1

    def __post_init__(self) -> None:
        if not _TOPIC_RE.match(self.name):
            raise ValueError(f"invalid topic name {self.name!r}")
        if self.partitions < 1:
            raise ValueError("partitions must be >= 1")
        if self.replication_factor < 1:
            raise ValueError("replication_factor must be >= 1")


@dataclass(frozen=True)
class TopicInfo:
    name: str
    partitions: int


def default_topic_specs(
    names: TopicNames,
    *,
    request_partitions: int = 8,
    training_partitions: int = 2,
    replication_factor: int = 1,
) -> list[TopicSpec]:
    """Every shared topic. Results and the adapter registry are compacted (latest per key)."""
    rf = replication_factor
    return [
        TopicSpec(names.requests, request_partitions, replication_factor=rf),
        TopicSpec(names.requests_dlq, 1, replication_factor=rf),
        TopicSpec(names.results, request_partitions, COMPACT, replication_factor=rf),
        TopicSpec(names.control, 1, replication_factor=rf),
        TopicSpec(names.training_requests, training_partitions, replication_factor=rf),
        TopicSpec(names.training_events, 1, replication_factor=rf),
        TopicSpec(names.adapters, 1, COMPACT, replication_factor=rf),
        TopicSpec(names.adapter_stats, 1, COMPACT, replication_factor=rf),  # key: consumer (streamer.routing)
        TopicSpec(names.catalogue, 1, COMPACT, replication_factor=rf),  # key: consumer (streamer.catalogue)
    ]


def reply_topic_spec(name: str) -> TopicSpec:
    """A client's private reply topic: one partition, short retention."""
    return TopicSpec(name, 1, {"retention.ms": str(REPLY_RETENTION_MS)})


@asynccontextmanager
async def admin_client(
    cfg: KafkaConfig, *, timeout_s: float = START_TIMEOUT_S
) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client (waiting for a broker that is still coming up), closed on exit."""

    async def attempt() -> AIOKafkaAdminClient:
        admin = AIOKafkaAdminClient(**cfg.aiokafka_kwargs())
        try:
            await admin.start()
        except BaseException:
            await admin.close()
            raise
        return admin

    admin = await retry_transient(attempt, what="admin client start", policy=START_RETRY.with_deadline(timeout_s))
    try:
        yield admin
    finally:
        await admin.close()


_TOPIC_AUTHORIZATION_FAILED = 29


async def ensure_topics(
    cfg: KafkaConfig, specs: Iterable[TopicSpec], *, timeout_s: float = START_TIMEOUT_S
) -> list[str]:
    """Create the topics that do not exist yet; return the names created.

    Existing topics are left as they are (even with another partition count). Returns once
    every topic has a leader for each partition, so producers and `assign` can use it at once.
    """
    specs = list(specs)
    if not specs:
        return []
    new_topics = [
        NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=dict(s.configs))
        for s in specs
    ]
    async with admin_client(cfg, timeout_s=timeout_s) as admin:
        response = await retry_transient(
            lambda: admin.create_topics(new_topics), what="create topics", policy=START_RETRY.with_deadline(timeout_s)
        )
        created, denied = [], {}
        for topic, code, *message in response.topic_errors:
            detail = message[0] if message and message[0] else for_code(code).message
            if code == 0:
                created.append(topic)
            elif code == _TOPIC_AUTHORIZATION_FAILED:
                denied[topic] = detail
            elif code != TopicAlreadyExistsError.errno:
                raise TopicAdminError(f"cannot create topic {topic}: {detail}")
        if denied:  # under ACLs a principal without CREATE may still use topics that exist
            described = await describe_without_creating(admin, list(denied))
            existing = {t["topic"] for t in described if t.get("error_code", 0) == 0 and t.get("partitions")}
            for topic, detail in denied.items():
                if topic not in existing:
                    raise TopicAdminError(f"cannot create topic {topic}: {detail}")
        await _wait_for_leaders(admin, [s.name for s in specs], timeout_s)
    if created:
        log.info("created topics %s", ", ".join(created))
    return created


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        topics = await describe_without_creating(admin, names)
        pending = [t["topic"] for t in topics if not _has_leaders(t)]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TopicAdminError(f"topics without leaders after {timeout_s:g} s: {pending}")
        await asyncio.sleep(_METADATA_POLL_S)


def _has_leaders(topic: dict) -> bool:
    partitions = topic.get("partitions") or []
    return (
        topic.get("error_code", 0) == 0
        and bool(partitions)
        and all(p.get("error_code", 0) == 0 and p.get("leader", -1) >= 0 for p in partitions)
    )


async def delete_topics(
    cfg: KafkaConfig,
    names: Iterable[str],
    *,
    missing_ok: bool = True,
    timeout_s: float = START_TIMEOUT_S,
) -> list[str]:
    """Delete topics; return the names deleted. Unknown topics are fine when `missing_ok`."""
    names = list(names)
    if not names:
        return []
    async with admin_client(cfg, timeout_s=timeout_s) as admin:
        response = await admin.delete_topics(names)
    deleted = []
    for topic, code, *_ in response.topic_error_codes:
        if code == 0:
            deleted.append(topic)
        elif not (missing_ok and code == UnknownTopicOrPartitionError.errno):
            raise TopicAdminError(f"cannot delete topic {topic}: {for_code(code).message}")
    return deleted


async def list_topics(cfg: KafkaConfig, *, prefix: str = "") -> list[str]:
    """Topic names starting with `prefix`, sorted; Kafka's internal `__*` topics left out."""
    async with admin_client(cfg) as admin:
        names = await admin.list_topics()
    return sorted(n for n in names if n.startswith(prefix) and not n.startswith("__"))


async def describe_without_creating(admin: AIOKafkaAdminClient, names: list[str]) -> list[dict]:
    """Each topic's entry of a metadata response, asked with `allow_auto_topic_creation=false`.

    aiokafka's `describe_topics` allows auto-creation, and a broker that auto-creates (Tansu
    always, Apache Kafka with its default `auto.create.topics.enable=true`) then creates every
    topic it is asked about: a reply topic its client just deleted would come back.
    """
    request = MetadataRequest(names, allow_auto_topic_creation=False)
    response = await admin._send_request(request)  # aiokafka has no public call that takes the flag
    return response.to_object()["topics"]


async def describe_topics(cfg: KafkaConfig, names: Iterable[str]) -> list[TopicInfo]:
    """Name and partition count of each existing topic among `names` (missing ones left out)."""
    async with admin_client(cfg) as admin:
        topics = await describe_without_creating(admin, list(names))
    return [
        TopicInfo(t["topic"], len(t["partitions"]))
        for t in topics
        if t.get("error_code", 0) == 0 and t.get("partitions")
    ]


async def topic_configs(cfg: KafkaConfig, name: str) -> dict[str, str]:
    """Every config value of one topic as the broker reports it (defaults included)."""
    async with admin_client(cfg) as admin:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    for response in responses:
        for error_code, error_message, _type, _name, entries, *_ in response.resources:
            if error_code != 0:
                raise TopicAdminError(f"cannot describe topic {name}: {error_message}")
            return {entry[0]: entry[1] for entry in entries}
    raise TopicAdminError(f"no configs returned for topic {name}")
