"""Fixtures for end-to-end tests: a tiny real model with two PEFT adapters, and a running
inference consumer (in this process, engine on its own thread) against the real broker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from consumers.config import ServeConfig
from consumers.inference import InferenceService
from streamer.transport.kafka import KafkaTransport
from consumers.serve import build_engine_thread
from streamer import KafkaConfig, TopicNames

ADAPTER_SPECS = {
    "acme/sentiment": dict(r=8, alpha=16, target_modules=("q_proj", "v_proj"), seed=11),
    "acme/summary": dict(r=4, alpha=8, target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "down_proj"), seed=22),
}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> tuple[Path, Path]:
    """(model_dir, adapter_root) built once per test session with save_pretrained / peft."""
    from gpu_engine.tiny import build_tiny_adapter, build_tiny_model

    root = tmp_path_factory.mktemp("tiny")
    model_dir = build_tiny_model(root / "model")
    for adapter_id, spec in ADAPTER_SPECS.items():
        build_tiny_adapter(model_dir, root / "adapters" / adapter_id, **spec)
    return model_dir, root / "adapters"


@pytest.fixture
async def serving(kafka_bootstrap, topic_prefix, tiny_model):
    """A running InferenceService on fresh topics; yields (kafka config, topic names, service)."""
    model_dir, adapter_root = tiny_model
    kafka = KafkaConfig(bootstrap_servers=kafka_bootstrap)
    topics = TopicNames(topic_prefix)
    runner = build_engine_thread(model_path=str(model_dir), adapter_root=str(adapter_root), device="cpu")
    service = InferenceService(KafkaTransport(kafka), topics, ServeConfig(request_partitions=2), runner)
    task = asyncio.create_task(service.run())
    ready = asyncio.create_task(service.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises the start-up error
    if ready not in done:
        raise TimeoutError("inference service did not become ready in 60 s")
    yield kafka, topics, service
    service.stop()
    await asyncio.wait_for(task, 60)
