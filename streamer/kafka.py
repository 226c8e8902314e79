"""Producers and consumers with low-latency defaults; started ones wait out a broker coming up.

aiokafka's `fetch_max_wait_ms` defaults to 500 ms, which would dominate time-to-first-token on a
broker that holds every fetch for the whole wait (Tansu): consumers made here wait
`KafkaConfig.fetch_max_wait_ms`, 5 ms unless set. Apache Kafka answers a fetch as soon as data
arrives, so there 500 ms costs no latency and spares the broker hundreds of empty fetches per
second per idle consumer. Producers never ask for idempotence or transactions (the embedded
Tansu broker rejects both) and wait for all in-sync replicas.

A producer has one request in flight per broker; what is published meanwhile waits in per-partition
batches. aiokafka's 16 KiB batches hold ~40 requests, so a burst of concurrent publishes stalls on
full batches long before the network does: batches here hold up to 256 KiB (under the 1 MiB that
brokers accept by default). A batch is sent as soon as the connection is free, never held back.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener

from streamer.config import KafkaConfig
from streamer.retry import START_RETRY, retry_transient

REQUEST_LINGER_MS = 0  # a request or first chunk should leave at once
PRODUCER_MAX_BATCH_BYTES = 256 * 1024
START_TIMEOUT_S = START_RETRY.deadline_s


def make_producer(
    cfg: KafkaConfig, *, linger_ms: int = REQUEST_LINGER_MS, **overrides: Any
) -> AIOKafkaProducer:
    """An unstarted producer: acks=all, no idempotence, 256 KiB batches, bytes in (no serializers)."""
    kwargs: dict[str, Any] = {
        **cfg.aiokafka_kwargs(),
        "acks": "all",
        "enable_idempotence": False,
        "linger_ms": linger_ms,
        "max_batch_size": PRODUCER_MAX_BATCH_BYTES,
    }
    kwargs.update(overrides)
    return AIOKafkaProducer(**kwargs)


def make_consumer(
    cfg: KafkaConfig,
    *topics: str,
    group_id: str | None = None,
    fetch_max_wait_ms: int | None = None,
    auto_offset_reset: str = "earliest",
    **overrides: Any,
) -> AIOKafkaConsumer:
    """An unstarted consumer; subscribes to `topics` (none: assign partitions yourself).

    Offsets are never auto-committed: the caller commits what it has finished. Fetches wait at
    most `fetch_max_wait_ms`, else the config's.
    """
    kwargs: dict[str, Any] = {
        **cfg.aiokafka_kwargs(),
        "group_id": group_id,
        "fetch_max_wait_ms": cfg.fetch_max_wait_ms if fetch_max_wait_ms is None else fetch_max_wait_ms,
        "auto_offset_reset": auto_offset_reset,
        "enable_auto_commit": False,
    }
    kwargs.update(overrides)
    return AIOKafkaConsumer(*topics, **kwargs)


async def start_producer(
    cfg: KafkaConfig, *, timeout_s: float = START_TIMEOUT_S, **kwargs: Any
) -> AIOKafkaProducer:
    """A started producer; waits (with back-off) for a broker that is still coming up."""

    async def attempt() -> AIOKafkaProducer:
        producer = make_producer(cfg, **kwargs)
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        return producer

    return await retry_transient(attempt, what="producer start", policy=START_RETRY.with_deadline(timeout_s))


async def start_consumer(
    cfg: KafkaConfig,
    *topics: str,
    timeout_s: float = START_TIMEOUT_S,
    listener: ConsumerRebalanceListener | None = None,
    **kwargs: Any,
) -> AIOKafkaConsumer:
    """A started consumer subscribed to `topics` (with `listener`, if given); waits (with back-off) for
    a broker that is still coming up, with a fresh client per try."""

    async def attempt() -> AIOKafkaConsumer:
        if listener is None:
            consumer = make_consumer(cfg, *topics, **kwargs)
        else:
            consumer = make_consumer(cfg, **kwargs)
            consumer.subscribe(list(topics), listener=listener)
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()
            raise
        return consumer

    return await retry_transient(attempt, what="consumer start", policy=START_RETRY.with_deadline(timeout_s))
