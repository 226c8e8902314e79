"""Through Apache Kafka: TrainingRequests → the training worker → events, adapter store, registry.

One worker serves a good job (its adapter then answers through an inference consumer exactly as
PeftModel.generate does, unlike the base), then a burst of bad requests (each a `failed` event with its
reason), then a job it is told to cancel; a second pair of workers shows a stopped worker's job
resuming from its checkpoint on the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import torch
from rich.console import Console

from cli.train_commands import follow_job
from consumers.training.config import TrainWorkerConfig
from consumers.training.worker import TrainingWorker
from gpu_engine.training import adapter_checksum
from schemas import DeadLetter, ErrorCode, Final, JobState, decode, decode_adapter_event
from streamer import KafkaConfig, LoraClient, TopicNames, make_consumer, start_producer
from streamer.training_client import build_training_request, submit_training
from streamer.transport.kafka import KafkaTransport
from tests.training.task_data import write_task

pytestmark = pytest.mark.kafka
TIMEOUT_S = 90
PROMPT = "the dog sees a tree ->"
MAX_NEW = 6
FAST = dict(effective_batch_size=8, micro_batch_size=4, max_seq_len=64, dropout=0.0, quantize="none")


@contextlib.asynccontextmanager
async def running_worker(kafka: KafkaConfig, topics: TopicNames, config: TrainWorkerConfig):
    worker = TrainingWorker(KafkaTransport(kafka), topics, config)
    task = asyncio.create_task(worker.run())
    ready = asyncio.create_task(worker.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 60)


def worker_config(tiny_base: Path, tmp_path: Path, **overrides) -> TrainWorkerConfig:
    fields = dict(
        base_model_path=str(tiny_base),
        adapter_root=str(tmp_path / "adapters"),
        work_dir=str(tmp_path / "jobs"),
        base_model_name="tiny",
        job_threads=1,
        checkpoint_every_steps=2,
        progress_interval_s=0.0,
        dataset_roots=(str(tmp_path),),
    )
    fields.update(overrides)
    return TrainWorkerConfig(**fields)


async def read_all(kafka: KafkaConfig, topic: str, count: int) -> list[bytes]:
    consumer = make_consumer(kafka, topic)
    await consumer.start()
    values: list[bytes] = []
    try:
        async with asyncio.timeout(30):
            while len(values) < count:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    values.extend(r.value for r in records)
    finally:
        await consumer.stop()
    return values


async def served_tokens(
    kafka: KafkaConfig, topics: TopicNames, base: Path, adapter_root: str, adapter_id: str
) -> list[int]:
    """Greedy tokens of PROMPT from an inference consumer started after the adapter was written."""
    from consumers.config import ServeConfig
    from consumers.inference import InferenceService
    from streamer.transport.kafka import KafkaTransport
    from consumers.serve import build_engine_thread

    runner = build_engine_thread(model_path=str(base), adapter_root=adapter_root, device="cpu")
    service = InferenceService(KafkaTransport(kafka), topics, ServeConfig(request_partitions=2), runner)
    task = asyncio.create_task(service.run())
    try:
        await asyncio.wait_for(service.ready.wait(), 60)
        async with LoraClient(config=kafka, topics=topics) as client:
            chunks = [
                c
                async for c in client.stream(PROMPT, adapter_id=adapter_id, max_new_tokens=MAX_NEW)
                if not isinstance(c, Final)
            ]
    finally:
        service.stop()
        await asyncio.wait_for(task, 60)
    return [t for c in chunks for t in c.token_ids]


async def test_train_fail_and_cancel_through_kafka(kafka_bootstrap, topic_prefix, tiny_base, tmp_path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kafka, topics = KafkaConfig(bootstrap_servers=kafka_bootstrap), TopicNames(topic_prefix)
    data = write_task(tmp_path / "task.jsonl", n=48)
    config = worker_config(tiny_base, tmp_path)
    async with running_worker(kafka, topics, config):
        async with LoraClient(config=kafka, topics=topics) as client:
            job = await client.train(
                "acme/cat", str(data), job_id="good", base_model="tiny", max_steps=8, learning_rate=3e-2, **FAST
            )
            async with job:
                events = [event async for event in job.events(idle_timeout_s=TIMEOUT_S)]
        states = [e.state for e in events]
        assert states[:2] == [JobState.QUEUED, JobState.STARTED] and states[-1] is JobState.COMPLETED, events[-1]
        assert JobState.PROGRESS in states and JobState.CHECKPOINTED in states
        assert events[1].quantization == "none" and events[1].total_steps == 8
        done = events[-1]
        adapter_dir = Path(config.adapter_root) / "acme" / "cat"
        installed_dir = Path(unquote(urlsplit(done.adapter_uri).path))  # the installed version's directory
        assert installed_dir.is_relative_to(adapter_dir.resolve()) and done.checksum == adapter_checksum(installed_dir)
        assert done.metrics["steps"] == 8 and done.loss is not None

        (registry,) = [decode_adapter_event(v) for v in await read_all(kafka, topics.adapters, 1)]
        assert (registry.adapter_id, registry.version, registry.checksum) == ("acme/cat", 1, done.checksum)

        tokenizer = AutoTokenizer.from_pretrained(str(tiny_base))
        ids = tokenizer(PROMPT, return_tensors="pt").input_ids
        base = AutoModelForCausalLM.from_pretrained(str(tiny_base), dtype=torch.float32).eval()
        with torch.no_grad():
            base_tokens = base.generate(ids, max_new_tokens=MAX_NEW, do_sample=False)[0, ids.shape[1] :].tolist()
            tuned = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
            peft_tokens = tuned.generate(input_ids=ids, max_new_tokens=MAX_NEW, do_sample=False)[
                0, ids.shape[1] :
            ].tolist()
        assert peft_tokens != base_tokens
        assert await served_tokens(kafka, topics, tiny_base, config.adapter_root, "acme/cat") == peft_tokens

        malformed = tmp_path / "malformed.jsonl"
        malformed.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\nnot json\n')
        bad = {
            "missing": (
                build_training_request("acme/x1", str(tmp_path / "absent.jsonl"), job_id="missing"),
                "dataset_not_found",
            ),
            "malformed": (
                build_training_request("acme/x2", str(malformed), job_id="malformed"),
                "line 2: missing field 'completion'; line 3: not valid JSON",
            ),
            "hyper": (
                build_training_request(
                    "acme/x3", str(data), job_id="hyper", effective_batch_size=10, micro_batch_size=4
                ),
                "multiple of micro_batch_size",
            ),
            "base": (
                build_training_request("acme/x4", str(data), job_id="base", base_model="llama-70b"),
                "unknown base model",
            ),
            "taken": (build_training_request("acme/cat", str(data), job_id="taken"), "already exists"),
        }
        jobs = {name: await submit_training(kafka, topics, request) for name, (request, _) in bad.items()}
        producer = await start_producer(kafka)
        await producer.send_and_wait(
            topics.training_requests, b'{"kind": "train", "job_id": "garbled", "adapter_id": 7}', key=b"garbled"
        )
        await producer.stop()
        shown = Console(record=True, width=240)
        for name, job in jobs.items():
            async with job:
                if name == "malformed":  # through the `lorastream train` display
                    assert await follow_job(job, idle_timeout_s=TIMEOUT_S, out=shown) == 1
                final = await job.wait(idle_timeout_s=TIMEOUT_S)
            assert (final.state, final.code) == (JobState.FAILED, ErrorCode.INVALID_REQUEST), (name, final)
            assert bad[name][1] in final.reason, (name, final.reason)
        assert "failed (invalid_request) dataset_invalid: 2 malformed row(s)" in shown.export_text()
        letters = [decode(v, DeadLetter) for v in await read_all(kafka, topics.requests_dlq, len(bad) + 1)]
        assert {letter.request_id: letter.code for letter in letters} == {
            **{name: ErrorCode.INVALID_REQUEST for name in bad},
            "garbled": ErrorCode.INVALID_REQUEST,
        }

        long_job = build_training_request("acme/long", str(data), job_id="long", max_steps=100000, **FAST)
        async with await submit_training(kafka, topics, long_job) as job:
            async for event in job.events(idle_timeout_s=TIMEOUT_S):
                if event.state is JobState.PROGRESS:
                    await job.cancel()
        assert (event.state, event.code) == (JobState.CANCELLED, ErrorCode.CANCELLED)
        assert not (Path(config.adapter_root) / "acme" / "long").exists()


async def test_a_stopped_workers_job_resumes_on_the_next_worker(
    kafka_bootstrap, topic_prefix, tiny_base, tmp_path
) -> None:
    kafka, topics = KafkaConfig(bootstrap_servers=kafka_bootstrap), TopicNames(topic_prefix)
    data = write_task(tmp_path / "task.jsonl", n=48)
    config = worker_config(tiny_base, tmp_path)
    request = build_training_request(
        "acme/resumed", str(data), job_id="resume-me", max_steps=30, learning_rate=1e-2, **FAST
    )
    async with await submit_training(kafka, topics, request) as job:
        async with running_worker(kafka, topics, config):
            async for event in job.events(idle_timeout_s=TIMEOUT_S):
                if event.state is JobState.PROGRESS and event.step >= 3:
                    break
        async with running_worker(kafka, topics, config):
            events = [event async for event in job.events(idle_timeout_s=TIMEOUT_S)]
    started = next(e for e in events if e.state is JobState.STARTED)
    assert started.attempt == 1 and started.step >= 3  # resumed from the stopped worker's checkpoint
    assert events[-1].state is JobState.COMPLETED and events[-1].metrics["resumed_from_step"] == started.step
