"""`lorastream eval`'s session through the real Kafka: a few prompts of two tasks, base and adapters
mixed, answered by an in-process inference consumer on a tiny random model."""

from __future__ import annotations

import asyncio
import json

import pytest
from rich.console import Console

from consumers.config import ServeConfig
from consumers.inference import InferenceService
from streamer.transport.kafka import KafkaTransport
from land.evaluate import EvalConfig
from land.session import eval_session
from land.tasks import builtin_task
from consumers.serve import build_engine_thread
from streamer import KafkaConfig, TopicNames

pytestmark = pytest.mark.kafka
ADAPTERS = {"sentiment": "land/sentiment", "arithmetic": "land/arithmetic"}
ROWS = 3


@pytest.fixture(scope="module")
def tiny_served_model(tmp_path_factory):
    from gpu_engine.tiny import build_tiny_adapter, build_tiny_model

    root = tmp_path_factory.mktemp("land-tiny")
    model_dir = build_tiny_model(root / "model")
    for seed, adapter_id in enumerate(ADAPTERS.values(), start=1):
        build_tiny_adapter(model_dir, root / "adapters" / adapter_id, seed=seed)
    return model_dir, root / "adapters"


async def test_eval_session_through_kafka(kafka_bootstrap, topic_prefix, tiny_served_model, tmp_path):
    model_dir, adapter_root = tiny_served_model
    kafka, topics = KafkaConfig(bootstrap_servers=kafka_bootstrap), TopicNames(topic_prefix)
    runner = build_engine_thread(model_path=str(model_dir), adapter_root=str(adapter_root), device="cpu")
    service = InferenceService(KafkaTransport(kafka), topics, ServeConfig(request_partitions=2), runner)
    serving = asyncio.create_task(service.run())
    try:
        await asyncio.wait_for(service.ready.wait(), 60)
        tasks = [builtin_task(name) for name in ADAPTERS]
        console = Console(record=True, width=100)
        result = await eval_session(
            kafka,
            topics,
            tasks,
            ADAPTERS,
            EvalConfig(max_test_rows=ROWS, timeout_s=60),
            json_path=tmp_path / "eval.json",
            plot_path=tmp_path / "eval.png",
            console=console,
        )
    finally:
        service.stop()
        await asyncio.wait_for(serving, 60)
    assert result.num_requests == 2 * 2 * ROWS
    for task in result.tasks:
        assert task.num_rows == ROWS and task.num_failed_base == task.num_failed_adapter == 0
        assert 0.0 <= task.base <= 100.0 and 0.0 <= task.adapter <= 100.0
        assert task.example_base != task.example_adapter  # the adapter really was applied
    body = json.loads((tmp_path / "eval.json").read_text())
    assert set(body["tasks"]) == set(ADAPTERS) and "mean_gain_points" in body
    assert (tmp_path / "eval.png").stat().st_size > 0
    assert "mean gain" in console.export_text()
