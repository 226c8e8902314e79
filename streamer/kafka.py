"""Producers and consumers with low-latency defaults, and retrying transient broker errors.

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

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from streamer.config import KafkaConfig

log = logging.getLogger(__name__)

T = TypeVar("T")

REQUEST_LINGER_MS = 0  # a request or first chunk should leave at once
PRODUCER_MAX_BATCH_BYTES = 256 * 1024
START_TIMEOUT_S = 60.0
_FIRST_BACKOFF_S = 0.1
_MAX_BACKOFF_S = 2.0


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


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying: the broker is not reachable or not ready yet."""
    if isinstance(exc, KafkaError):
        return bool(getattr(exc, "retriable", False))
    return isinstance(exc, (ConnectionError, TimeoutError))


async def retry_transient(
    fn: Callable[[], Awaitable[T]], *, what: str, timeout_s: float = START_TIMEOUT_S
) -> T:
    """Await `fn()` until it succeeds, retrying transient errors with exponential back-off.

    Non-transient errors, and the last transient one once `timeout_s` has passed, propagate.
    """
    deadline = time.monotonic() + timeout_s
    backoff_s = _FIRST_BACKOFF_S
    while True:
        try:
            return await fn()
        except Exception as exc:
            remaining_s = deadline - time.monotonic()
            if not is_transient(exc) or remaining_s <= 0:
                raise
            log.warning("%s failed (%r); retrying in %.2f s", what, exc, backoff_s)
            await asyncio.sleep(min(backoff_s, remaining_s))
            backoff_s = min(backoff_s * 2, _MAX_BACKOFF_S)


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

    return await retry_transient(attempt, what="producer start", timeout_s=timeout_s)


async def start_consumer(
    cfg: KafkaConfig, *topics: str, timeout_s: float = START_TIMEOUT_S, **kwargs: Any
) -> AIOKafkaConsumer:
    """A started consumer; waits (with back-off) for a broker that is still coming up."""

    async def attempt() -> AIOKafkaConsumer:
        consumer = make_consumer(cfg, *topics, **kwargs)
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()
            raise
        return consumer

    return await retry_transient(attempt, what="consumer start", timeout_s=timeout_s)
