"""The consumer's announcement in the catalogue: which base it serves, where, and its adapters' tiers.

At start, then every `catalogue_interval_s`, the consumer sends a `ServedBase` (streamer.catalogue)
to the compacted `<prefix>.catalogue` topic, keyed by its consumer name; on stop a tombstone, so
clients forget it at once (a crashed consumer's entry goes stale instead). Clients pick a base's
request topic from it and list the served bases (`LoraClient.models()`, `lorastream ls`).
What it says of the engine is read from the engine when present (`EngineThread` has it all); a
stand-in engine in tests announces its base name alone.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from typing import Self

import lorastream
from schemas.limits import ADAPTER_ID_PATTERN, BASE_MODEL_PATTERN
from streamer.catalogue import MAX_ANNOUNCED_ADAPTERS, ServedBase, Tier, encode_served_base
from streamer.transport import Producer, Transport

log = logging.getLogger(__name__)

_SEND_TIMEOUT_S = 5.0
_LABEL_RE = re.compile(r"^[A-Za-z0-9._/+-]{1,64}\Z")
_ADAPTER_ID_RE = re.compile(ADAPTER_ID_PATTERN)


@dataclass(frozen=True)
class Lane:
    """Where a consumer reads its requests: the topic and the consumer group."""

    topic: str
    group_id: str


def served_base_name(engine: object) -> str | None:
    """The engine's base name when the wire accepts it as one (else None: it serves unnamed)."""
    name = getattr(engine, "base_name", None)
    return name if isinstance(name, str) and re.match(BASE_MODEL_PATTERN, name) else None


def _label(value: object) -> str | None:
    return value if isinstance(value, str) and _LABEL_RE.match(value) else None


def adapter_tiers(engine: object) -> dict[str, Tier]:
    """adapter id → the best tier it is resident in (device, else host); {} when the engine cannot tell.

    Read from another thread than the engine's: a snapshot that raced with a change is skipped."""
    cache = getattr(getattr(engine, "engine", None), "adapter_cache", None)
    if cache is None:
        return {}
    tiers: dict[str, Tier] = {}
    try:
        for tier, keys in ((Tier.DEVICE, list(cache.device.keys())), (Tier.HOST, list(cache.host.keys()))):
            for adapter_id, _version in keys:
                if _ADAPTER_ID_RE.match(adapter_id) and len(tiers) < MAX_ANNOUNCED_ADAPTERS:
                    tiers.setdefault(adapter_id, tier)
    except RuntimeError:  # changed while read: the next announcement tells
        return {}
    return tiers


def describe(engine: object, consumer: str, lane: Lane, base_name: str) -> ServedBase:
    """The announcement of a consumer serving `base_name` from `engine` on `lane`, sent now."""
    inner = getattr(engine, "engine", None)
    spec = getattr(inner, "spec", None)
    config = getattr(inner, "config", None)
    max_model_len = getattr(inner, "max_model_len", 0)
    return ServedBase(
        consumer=consumer,
        base=base_name,
        architecture=_label(getattr(spec, "arch", None)),
        quantization=_label(getattr(config, "quantize", None)),
        max_model_len=max_model_len if isinstance(max_model_len, int) and max_model_len > 0 else 0,
        requests_topic=lane.topic,
        group_id=lane.group_id,
        engine_version=lorastream.__version__,
        sent_ms=time.time_ns() // 1_000_000,
        adapter_tiers=adapter_tiers(engine),
    )


class CataloguePublisher:
    """`async with` it around the service's run: an announcement now and every interval, a tombstone at the end."""

    def __init__(
        self, transport: Transport, topic: str, consumer: str, lane: Lane, engine: object, base_name: str,
        interval_s: float,
    ) -> None:
        self._transport = transport
        self._topic = topic
        self.consumer = consumer
        self._lane = lane
        self._engine = engine
        self._base_name = base_name
        self._interval_s = interval_s
        self._producer: Producer | None = None
        self._task: asyncio.Task[None] | None = None
        self.num_sent = 0

    async def __aenter__(self) -> Self:
        producer = self._transport.producer()
        await producer.start()
        self._producer = producer
        await self.publish_once()
        self._task = asyncio.create_task(self._run(), name="lorastream-catalogue")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._producer is not None:
            await self._send(None)  # no longer served here
            await self._producer.stop()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)  # a heartbeat: there is no event to wait on
            try:
                await self.publish_once()
            except Exception:  # one bad snapshot must not end the heartbeats (the entry would go stale)
                log.exception("catalogue announcement failed")

    async def publish_once(self) -> None:
        entry = describe(self._engine, self.consumer, self._lane, self._base_name)
        await self._send(encode_served_base(entry))

    async def _send(self, value: bytes | None) -> None:
        try:
            ack = await self._producer.send(self._topic, value, key=self.consumer.encode())
            await asyncio.wait_for(ack, _SEND_TIMEOUT_S)
            self.num_sent += 1
        except Exception as exc:  # requests naming this base are refused by clients meanwhile: never fatal
            log.warning("catalogue announcement not published to %s: %r", self._topic, exc)
