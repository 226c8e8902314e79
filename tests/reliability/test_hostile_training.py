"""Hostile training requests against a real `lorastream train-worker` process (issue 20): datasets
outside the dataset roots, a symlink out of a root, /proc/self/mem under a root that includes
/proc, a FIFO, and datasets over the byte and row caps each end with a `failed` event carrying
dataset_refused and a dead letter, while a good request sent among them completes and the worker
never exits."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path

import pytest

from schemas import DeadLetter, ErrorCode, JobState, decode
from streamer import KafkaConfig, TopicNames, default_topic_specs, ensure_topics, make_consumer
from streamer.training_client import build_training_request, submit_training
from tests.reliability.conftest import dead_letters, train_worker_process
from tests.training.task_data import write_task

pytestmark = pytest.mark.kafka

IDLE_TIMEOUT_S = 180  # the worker process imports torch before its first event
MAX_DATASET_BYTES = 64 * 1024
MAX_DATASET_ROWS = 100
TRAINING_PARTITIONS = 2


async def test_hostile_datasets_are_refused_while_good_training_completes(
    kafka_bootstrap, topic_prefix, tiny_model, tmp_path, report_counts
) -> None:
    kafka, topics = KafkaConfig(bootstrap_servers=kafka_bootstrap), TopicNames(topic_prefix)
    model_dir, _ = tiny_model
    data = tmp_path / "data"
    good = write_task(data / "good.jsonl", n=32)
    write_task(data / "too-many-rows.jsonl", n=MAX_DATASET_ROWS + 1)
    (data / "too-many-bytes.jsonl").write_bytes(good.read_bytes() * (MAX_DATASET_BYTES // good.stat().st_size + 1))
    (data / "escape.jsonl").symlink_to("/etc/hostname")
    os.mkfifo(data / "fifo.jsonl")
    hostile = {
        "outside-roots": "/etc/passwd",
        "dotdot": f"{data}/../../../etc/passwd",
        "symlink-out": str(data / "escape.jsonl"),
        "proc-mem": "/proc/self/mem",
        "proc-environ": "file:///proc/self/environ",
        "fifo": str(data / "fifo.jsonl"),
        "too-many-bytes": str(data / "too-many-bytes.jsonl"),
        "too-many-rows": str(data / "too-many-rows.jsonl"),
    }
    fast = dict(max_steps=2, effective_batch_size=4, micro_batch_size=4, max_seq_len=64, quantize="none")
    requests = {name: build_training_request(f"hostile/{name}", uri, job_id=name) for name, uri in hostile.items()}
    names = list(requests)
    names.insert(len(names) // 2, "good")  # the good request waits behind hostile ones on its partition
    requests["good"] = build_training_request("tenant/good", str(good), job_id="good", **fast)

    await ensure_topics(kafka, default_topic_specs(topics, training_partitions=TRAINING_PARTITIONS))
    args = [
        "--model", str(model_dir), "--adapters", str(tmp_path / "adapters"), "--work-dir", str(tmp_path / "jobs"),
        "--dataset-root", str(data), "--dataset-root", "/proc",
        "--max-dataset-bytes", str(MAX_DATASET_BYTES), "--max-dataset-rows", str(MAX_DATASET_ROWS),
        "--device", "cpu", "--threads", "1", "--progress-interval-s", "0",
        "--training-partitions", str(TRAINING_PARTITIONS),
        "--bootstrap-servers", kafka_bootstrap, "--topic-prefix", topic_prefix,
    ]
    log_path = tmp_path / "train-worker.log"
    with train_worker_process(args, log_path) as worker:
        jobs = [await submit_training(kafka, topics, requests[name]) for name in names]
        try:
            finals = await asyncio.gather(*(job.wait(idle_timeout_s=IDLE_TIMEOUT_S) for job in jobs))
        finally:
            for job in jobs:
                await job.close()
        outcome = dict(zip(names, finals, strict=True))
        letters = await dead_letters(kafka, topics.requests_dlq, len(hostile))
        alive = worker.poll() is None
    log_tail = log_path.read_text(errors="replace")[-3000:]

    codes = Counter(final.code.value if final.code else final.state.value for final in finals)
    report_counts(
        f"hostile training: {len(hostile)} hostile datasets → {dict(codes)}; "
        f"good completed={outcome['good'].state is JobState.COMPLETED}; dead letters={len(letters)}; "
        f"worker exits={0 if alive else 1}"
    )
    assert alive, log_tail
    assert outcome["good"].state is JobState.COMPLETED, (outcome["good"], log_tail)
    for name in hostile:
        assert (outcome[name].state, outcome[name].code) == (JobState.FAILED, ErrorCode.DATASET_REFUSED), name
    assert "not a regular file" in outcome["proc-mem"].reason and "not a regular file" in outcome["fifo"].reason
    assert "outside the worker's dataset roots" in outcome["symlink-out"].reason
    assert "dataset_too_large" in outcome["too-many-bytes"].reason
    assert "dataset_too_large" in outcome["too-many-rows"].reason
    assert {letter.request_id: letter.code for letter in letters} == dict.fromkeys(hostile, ErrorCode.DATASET_REFUSED)
    assert not (tmp_path / "adapters" / "hostile").exists()
