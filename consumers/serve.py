"""Process wiring for `lorastream serve`: engine engine + inference service + signals."""

from __future__ import annotations

import asyncio
import logging
import signal

from consumers.config import ServeConfig
from consumers.inference import InferenceService, EngineHandle
from streamer.transport.kafka import KafkaTransport
from streamer import KafkaConfig, TopicNames

log = logging.getLogger(__name__)


def build_engine_thread(
    *,
    model_path: str,
    adapter_root: str | None,
    quantize: str | None = None,
    dtype: str = "float32",
    device: str = "auto",
    max_batch_size: int = 64,
    **engine_options,
) -> EngineHandle:
    """Load the model (this takes a while) and return the engine's step-loop engine.

    `engine_options`: any other EngineConfig field (cache budgets, S3 endpoint, fairness, ...).
    """
    from gpu_engine.config import EngineConfig
    from gpu_engine.engine import Engine
    from gpu_engine.engine_thread import EngineThread

    config = EngineConfig(
        model_path=model_path,
        adapter_root=adapter_root,
        quantize=quantize,
        dtype=dtype,
        device=device,
        max_batch_size=max_batch_size,
        **engine_options,
    )
    return EngineThread(Engine(config))


async def serve_forever(
    kafka: KafkaConfig, topics: TopicNames, config: ServeConfig, engine: EngineHandle
) -> None:
    """Serve until SIGINT/SIGTERM, then stop intake, drain, commit and leave the group."""
    service = InferenceService(KafkaTransport(kafka), topics, config, engine)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, service.stop)
    log.info("serving %s (group %s)", topics.requests, config.group_id)
    await service.run()
    log.info("stopped")
