"""The release gate through Apache Kafka: real training jobs, evaluated on the serving engine, served
(or not) by a running inference consumer that follows the adapters topic.

A weak fine-tune (a few steps) does not beat the base by the margin on a test file: it is kept (in
the store, with its scores) and a request for the adapter gets adapter_not_found. A stronger one
does and is served (the answers' lineage names its version). `lorastream promote` then switches
the running consumer to the kept version, and `lorastream rollback` back to the released one: a
new registry revision that names an older version, which the consumer follows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path

import pytest

from cli.release_commands import cmd_promote, cmd_rollback
from cli.train_eval_sets import land_eval_sets
from consumers.config import ServeConfig
from consumers.inference import InferenceService
from consumers.serve import build_engine_thread
from consumers.training.adapter_release import read_record
from consumers.training.config import TrainWorkerConfig
from consumers.training.worker import TrainingWorker
from gpu_engine.training.adapter_store import installed, installed_versions
from schemas import ErrorCode, JobState, TrainingEvent
from schemas.training import Evaluation, Release, ReleaseDecision, ReleaseRule
from streamer import KafkaConfig, LoraClient, TopicNames
from streamer.errors import RequestFailed
from streamer.training_client import build_training_request, submit_training
from streamer.transport.kafka import KafkaTransport
from tests.training.task_data import write_task

pytestmark = pytest.mark.kafka
ADAPTER = "acme/gated"
MARGIN = 10.0
FAST = dict(effective_batch_size=8, micro_batch_size=4, max_seq_len=64, dropout=0.0, quantize="none", r=8, alpha=16.0)
TIMEOUT_S = 120


@contextlib.asynccontextmanager
async def running(service_or_worker):
    task = asyncio.create_task(service_or_worker.run())
    ready = asyncio.create_task(service_or_worker.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    assert ready in done
    try:
        yield service_or_worker
    finally:
        service_or_worker.stop()
        await asyncio.wait_for(task, 60)


async def train(kafka: KafkaConfig, topics: TopicNames, job_id: str, data: Path, test: Path, steps: int, lr: float):
    request = build_training_request(
        ADAPTER, str(data), job_id=job_id, base_model="tiny", overwrite=True, max_steps=steps, learning_rate=lr,
        evaluation=Evaluation(test_uri=str(test), metric="accuracy", max_new_tokens=4),
        release=Release(ReleaseRule.BEAT_BASE, margin_points=MARGIN), **FAST,
    )  # fmt: skip
    job = await submit_training(kafka, topics, request)
    async with job:
        events = [event async for event in job.events(idle_timeout_s=TIMEOUT_S)]
    return events


async def served_version(client: LoraClient) -> int | None:
    """The adapter version the consumer answers with (its Final's lineage); None: adapter_not_found."""
    try:
        final = await client.generate("the cat sees a tree ->", ADAPTER, max_new_tokens=2, timeout_s=60)
    except RequestFailed as exc:
        assert exc.code is ErrorCode.ADAPTER_NOT_FOUND, exc
        return None
    return final.lineage.adapter_version


async def wait_served(client: LoraClient, version: int) -> None:
    async with asyncio.timeout(30):
        while (now := await served_version(client)) != version:
            await asyncio.sleep(0.2)
    assert now == version


def _cli_args(kafka_bootstrap: str, topics: TopicNames, root: str, **fields) -> argparse.Namespace:
    return argparse.Namespace(
        adapters=root, bootstrap_servers=kafka_bootstrap, topic_prefix=topics.prefix, security_protocol=None,
        sasl_mechanism=None, sasl_username=None, sasl_password=None, ssl_cafile=None, fetch_max_wait_ms=5, **fields,
    )  # fmt: skip


def check_decision(completed: TrainingEvent) -> None:
    scores = completed.release
    assert completed.state is JobState.COMPLETED and scores is not None
    assert (scores.task, scores.metric, scores.num_examples, scores.rule) == ("test_file", "accuracy", 40, ReleaseRule.BEAT_BASE)
    beats = scores.candidate > scores.base + MARGIN
    assert scores.decision is (ReleaseDecision.RELEASED if beats else ReleaseDecision.KEPT)


async def test_only_a_fine_tune_that_beats_the_base_is_served_and_promote_rollback_switch(
    kafka_bootstrap, topic_prefix, tiny_model, tmp_path
) -> None:
    model_dir, _ = tiny_model
    kafka, topics = KafkaConfig(bootstrap_servers=kafka_bootstrap), TopicNames(topic_prefix)
    data, test = write_task(tmp_path / "task.jsonl", n=48), write_task(tmp_path / "test.jsonl", n=40, seed=5)
    root = str(tmp_path / "adapters")
    config = TrainWorkerConfig(
        base_model_path=str(model_dir), adapter_root=root, work_dir=str(tmp_path / "jobs"), base_model_name="tiny",
        job_threads=1, device="cpu", progress_interval_s=0.0, dataset_roots=(str(tmp_path),),
    )  # fmt: skip
    runner = build_engine_thread(model_path=str(model_dir), adapter_root=root, device="cpu")
    service = InferenceService(KafkaTransport(kafka), topics, ServeConfig(request_partitions=2), runner)
    worker = TrainingWorker(KafkaTransport(kafka), topics, config, eval_sets=land_eval_sets)
    async with running(service), running(worker), LoraClient(config=kafka, topics=topics) as client:
        weak = (await train(kafka, topics, "weak", data, test, steps=2, lr=1e-3))[-1]
        check_decision(weak)
        assert weak.release.decision is ReleaseDecision.KEPT and weak.adapter_version == 1
        assert await served_version(client) is None  # kept, not served: nothing was ever announced
        assert installed(root, ADAPTER) is None and read_record(installed_versions(root, ADAPTER)[0]).release == weak.release

        strong = (await train(kafka, topics, "strong", data, test, steps=16, lr=6e-2))[-1]
        check_decision(strong)
        assert strong.release.decision is ReleaseDecision.RELEASED and strong.adapter_version == 2
        assert strong.release.candidate > weak.release.candidate
        await wait_served(client, 2)

        promote = _cli_args(kafka_bootstrap, topics, root, adapter=ADAPTER, version=1)
        assert await asyncio.to_thread(cmd_promote, promote) == 0
        await wait_served(client, 1)
        assert await asyncio.to_thread(cmd_rollback, _cli_args(kafka_bootstrap, topics, root, adapter=ADAPTER)) == 0
        await wait_served(client, 2)
        registry = service.adapters_topic
        assert (registry.versions, registry.revisions) == ({ADAPTER: 2}, {ADAPTER: 3})  # released, promoted, rolled back
