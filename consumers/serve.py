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


def build_engine_thread(*, model_path: str, **engine_options) -> EngineHandle:
    """Load the model (this takes a while) and return the engine on its step-loop thread.

    `engine_options`: any other EngineConfig field (adapter_root, dtype, device, quantize, cache
    budgets, S3 endpoint, fairness, ...); what is not given keeps EngineConfig's default.
    """
    from gpu_engine.config import EngineConfig
    from gpu_engine.engine import Engine
    from gpu_engine.engine_thread import EngineThread

    return EngineThread(Engine(EngineConfig(model_path=model_path, **engine_options)))


async def serve_forever(
    kafka: KafkaConfig, topics: TopicNames, config: ServeConfig, engine: EngineHandle
) -> None:
    """Serve until SIGINT/SIGTERM, then stop intake, drain, commit and leave the group."""
    service = InferenceService(KafkaTransport(kafka), topics, config, engine)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, service.stop)
    log.info("serving %s (group %s)", service.lane.topic, service.lane.group_id)
    await service.run()
    log.info("stopped")
