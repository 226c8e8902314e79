"""Through Apache Kafka: whatever fails between fetching a training request and answering it — a
dataset that raises mid-read, a job process that fails, an install that raises — ends that job
with a typed `failed` event and a dead letter, its offset is committed, and the same worker then
completes a good job."""

from __future__ import annotations

import asyncio
import errno
import json

from aiokafka.admin import AIOKafkaAdminClient

import consumers.training.job_runner
import gpu_engine.training.dataset_source as dataset_source
from schemas import DeadLetter, ErrorCode, JobState, decode
from streamer import KafkaConfig, TopicNames
from streamer.training_client import build_training_request, submit_training
from tests.training.test_training_e2e import FAST, TIMEOUT_S, read_all, running_worker, worker_config
from tests.training.task_data import write_task


async def committed_offsets(kafka: KafkaConfig, group_id: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group_id)
    finally:
        await admin.close()
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic)


async def test_any_failure_is_typed_dead_lettered_and_committed(
    kafka_bootstrap, topic_prefix, tiny_base, tmp_path, monkeypatch
) -> None:
    kafka, topics = KafkaConfig(bootstrap_servers=kafka_bootstrap), TopicNames(topic_prefix)
    data = write_task(tmp_path / "task.jsonl", n=32)
    flaky = write_task(tmp_path / "flaky.jsonl", n=32)
    too_long = tmp_path / "too-long.jsonl"
    too_long.write_text(json.dumps({"prompt": "the river " * 30, "completion": " yes"}) + "\n")
    read_capped = dataset_source._read_capped

    def raising_mid_read(f, shown, max_bytes):
        if "flaky" in shown:
            f.read(16)
            raise OSError(errno.EIO, "Input/output error")
        return read_capped(f, shown, max_bytes)

    monkeypatch.setattr(dataset_source, "_read_capped", raising_mid_read)
    install = consumers.training.job_runner.install_trained

    def install_raising_for_boom(config, request, adapter_dir, checksum):
        if request.adapter_id == "acme/boom":
            raise RuntimeError("disk on fire")
        return install(config, request, adapter_dir, checksum)

    monkeypatch.setattr(consumers.training.job_runner, "install_trained", install_raising_for_boom)
    fast = dict(FAST, max_steps=2)
    requests = {
        "flaky": (build_training_request("acme/flaky", str(flaky), job_id="flaky", **fast), ErrorCode.INTERNAL),
        "truncated": (
            build_training_request("acme/trunc", str(too_long), job_id="truncated", **dict(fast, max_seq_len=8)),
            ErrorCode.INVALID_REQUEST,
        ),
        "boom": (build_training_request("acme/boom", str(data), job_id="boom", **fast), ErrorCode.INTERNAL),
        "good": (build_training_request("acme/good", str(data), job_id="good", **fast), None),
    }
    config = worker_config(tiny_base, tmp_path)
    async with running_worker(kafka, topics, config):
        finals = {}
        for name, (request, _) in requests.items():
            async with await submit_training(kafka, topics, request) as job:
                finals[name] = await job.wait(idle_timeout_s=TIMEOUT_S)
        assert {name: final.code for name, final in finals.items()} == {n: c for n, (_, c) in requests.items()}
        assert finals["good"].state is JobState.COMPLETED
        assert "OSError: [Errno 5] Input/output error" in finals["flaky"].reason
        assert "RuntimeError: disk on fire" in finals["boom"].reason
        assert "dataset_invalid" in finals["truncated"].reason
        letters = [decode(v, DeadLetter) for v in await read_all(kafka, topics.requests_dlq, 3)]
        assert {letter.request_id: letter.code for letter in letters} == {
            name: code for name, (_, code) in requests.items() if code is not None
        }
        async with asyncio.timeout(30):
            while await committed_offsets(kafka, config.group_id, topics.training_requests) < len(requests):
                await asyncio.sleep(0.2)
