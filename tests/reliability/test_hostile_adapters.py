"""Hostile adapters and registry records against real `lorastream serve` (and `train-worker`) processes
(issue 20): registry events pointing outside the adapter roots or at another bucket, with a version
beyond the bound, or keyed by another id are skipped (the id keeps serving its version); a weights
file linked out of the root, an unsafe module pattern and a flood of unknown ids get typed errors;
the catastrophic-backtracking pattern is served at once; and a training job installing `acme`
with overwrite leaves `acme/sql` and `acme/summary` alone — while good traffic sent alongside is
all answered and no process exits."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from schemas import AdapterEvent, ErrorCode, JobState, encode
from streamer import (
    KafkaConfig,
    LoraClient,
    RequestFailed,
    TopicNames,
    default_topic_specs,
    ensure_topics,
    start_producer,
)
from streamer.training_client import build_training_request, submit_training
from tests.reliability.conftest import dead_letters, train_worker_process
from tests.training.task_data import write_task

pytestmark = pytest.mark.kafka

PROMPT = "the cat sat on the mat"
GOOD_IDS = ("acme/sentiment", "acme/summary", None)
EVIL_KEY = "(?:(?:.|.)*)*#"  # 4.4 s on 13 characters with Python's re, holding the GIL
NUM_GOOD = 24
NUM_FLOOD = 300
TIMEOUT_S = 120


def copy_adapter(source: Path, dest: Path, **config_changes) -> Path:
    shutil.copytree(source, dest)
    if config_changes:
        config = json.loads((dest / "adapter_config.json").read_text())
        (dest / "adapter_config.json").write_text(json.dumps({**config, **config_changes}))
    return dest


def tree_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            digest.update(str(p.relative_to(path)).encode() + b"\0" + p.read_bytes())
    return digest.hexdigest()


async def outcome(client: LoraClient, adapter_id: str | None) -> ErrorCode | None:
    """None for an answer, else the Error's code."""
    try:
        await client.generate(PROMPT, adapter_id=adapter_id, max_new_tokens=4, timeout_s=TIMEOUT_S)
    except RequestFailed as exc:
        return exc.code
    return None


async def publish(kafka: KafkaConfig, topic: str, records: list[tuple[str, bytes | None]]) -> None:
    producer = await start_producer(kafka)
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key.encode())
    finally:
        await producer.stop()


async def until(check, timeout_s: float = TIMEOUT_S) -> None:
    async with asyncio.timeout(timeout_s):
        while not await check():
            await asyncio.sleep(0.2)


def raw_event(adapter_id: str, version: int, uri: str) -> bytes:
    """An AdapterEvent as a hostile producer would write it: no client-side bound applies."""
    return json.dumps({"kind": "adapter", "adapter_id": adapter_id, "version": version, "uri": uri}).encode()


async def test_hostile_registry_records_and_adapter_files(
    kafka_bootstrap, topic_prefix, tiny_model, serve_process, tmp_path, report_counts
):
    kafka, topics = KafkaConfig(bootstrap_servers=kafka_bootstrap), TopicNames(topic_prefix)
    _, shared_root = tiny_model
    root, outside = tmp_path / "adapters", tmp_path / "outside"
    for adapter_id in ("acme/sentiment", "acme/summary"):
        copy_adapter(shared_root / adapter_id, root / adapter_id)
    copy_adapter(shared_root / "acme/sentiment", root / "hostile/barrier")
    corrupt = copy_adapter(shared_root / "acme/sentiment", outside / "corrupt")
    (corrupt / "adapter_model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    linked = copy_adapter(shared_root / "acme/sentiment", root / "hostile/linked")
    (linked / "adapter_model.safetensors").unlink()
    (linked / "adapter_model.safetensors").symlink_to(shared_root / "acme/summary/adapter_model.safetensors")
    copy_adapter(shared_root / "acme/sentiment", root / "hostile/evil-pattern", rank_pattern={EVIL_KEY: 4})
    copy_adapter(shared_root / "acme/sentiment", root / "hostile/backref", alpha_pattern={r"(q)\1_proj": 4})
    copy_adapter(shared_root / "acme/sentiment", root / "hostile/big-config", padding=" " * (1 << 20))  # cap: 1 MiB
    # each of these, if applied, would make the good id's requests fail (a corrupt or unreachable adapter)
    hostile_records = [
        ("acme/sentiment", raw_event("acme/sentiment", 7, corrupt.as_uri())),  # outside the roots
        ("acme/sentiment", raw_event("acme/sentiment", 8, "file:///etc")),
        ("acme/summary", raw_event("acme/summary", 9, "s3://someone-elses-bucket/adapters/x")),  # another bucket
        ("acme/summary", raw_event("acme/summary", 2**63, (root / "nowhere").as_uri())),  # pinned forever
        ("acme/other", raw_event("acme/sentiment", 10, (root / "nowhere").as_uri())),  # keyed by another id
        ("acme/summary", b"\xff not json"),
    ]
    barrier = ("hostile/barrier", encode(AdapterEvent("hostile/barrier", version=1, uri="", deleted=True)))

    await ensure_topics(kafka, default_topic_specs(topics, request_partitions=4))
    server = serve_process("hostile-adapters", "--adapters", str(root))
    async with LoraClient(config=kafka, topics=topics, request_timeout_s=TIMEOUT_S) as client:
        assert await outcome(client, "acme/sentiment") is None  # up and serving (first answer waits for start-up)
        await publish(kafka, topics.adapters, [*hostile_records, barrier])

        async def barrier_applied() -> bool:  # one partition: every record before it has been handled
            return await outcome(client, "hostile/barrier") is ErrorCode.ADAPTER_NOT_FOUND

        await until(barrier_applied)
        hostile_ids = ["hostile/linked", "hostile/backref", "hostile/big-config", "hostile/evil-pattern"]
        flood_ids = [f"random/{uuid.uuid4().hex[:16]}" for _ in range(NUM_FLOOD)]
        good_ids = [GOOD_IDS[n % len(GOOD_IDS)] for n in range(NUM_GOOD)]
        ids = [*good_ids[: NUM_GOOD // 2], *hostile_ids, *flood_ids, *good_ids[NUM_GOOD // 2 :]]
        started = time.monotonic()

        async def timed(adapter_id: str | None) -> tuple[ErrorCode | None, float]:
            code = await outcome(client, adapter_id)
            return code, time.monotonic() - started

        results = list(zip(ids, await asyncio.gather(*(timed(i) for i in ids)), strict=True))
    good_results = [r for i, r in results if i in GOOD_IDS]
    hostile = {i: r for i, r in results if i in hostile_ids}
    flood = Counter(code.value for i, (code, _) in results if i in flood_ids)
    refused = [code for code, _ in hostile.values() if code is not None]
    num_letters = len(refused) + flood[ErrorCode.ADAPTER_NOT_FOUND.value] + 1  # + the barrier's answer
    letters = Counter(letter.code.value for letter in await dead_letters(kafka, topics.requests_dlq, num_letters))
    alive = server.proc.poll() is None
    (log_path,) = tmp_path.glob("serve-hostile-adapters-*.log")
    skipped = [line for line in log_path.read_text().splitlines() if "ignoring adapters record" in line]

    report_counts(
        f"hostile adapters: {len(skipped)}/{len(hostile_records)} hostile registry records skipped "
        f"({sum('adapter_path_refused' in line for line in skipped)} for their location); "
        f"files/patterns → { {i: (c.value if c else 'answered') for i, (c, _) in hostile.items()} }; "
        f"flood of {NUM_FLOOD} unknown ids → {dict(flood)}; dead letters {dict(letters)}; "
        f"good answered {sum(c is None for c, _ in good_results)}/{NUM_GOOD} "
        f"(last after {max(s for _, s in good_results):.1f} s); serve exits={0 if alive else 1}"
    )
    assert alive
    assert len(skipped) == len(hostile_records), skipped
    assert sum("adapter_path_refused" in line for line in skipped) == 3, skipped
    assert [code for code, _ in good_results] == [None] * NUM_GOOD
    assert hostile["hostile/linked"][0] is ErrorCode.ADAPTER_PATH_REFUSED
    assert hostile["hostile/backref"][0] is ErrorCode.ADAPTER_PATTERN_UNSAFE
    assert hostile["hostile/big-config"][0] is ErrorCode.ADAPTER_TOO_LARGE
    assert hostile["hostile/evil-pattern"][0] is None
    assert set(flood) <= {ErrorCode.ADAPTER_NOT_FOUND.value, ErrorCode.ADAPTER_UNAVAILABLE.value}
    assert sum(flood.values()) == NUM_FLOOD
    not_found = ErrorCode.ADAPTER_NOT_FOUND.value
    assert letters == Counter({**Counter(code.value for code in refused), not_found: num_letters - len(refused)})


async def test_overwriting_a_parent_adapter_keeps_nested_ids_serving(
    kafka_bootstrap, topic_prefix, tiny_model, serve_process, tmp_path, report_counts
):
    kafka, topics = KafkaConfig(bootstrap_servers=kafka_bootstrap), TopicNames(topic_prefix)
    model_dir, shared_root = tiny_model
    root, data = tmp_path / "adapters", tmp_path / "data"
    copy_adapter(shared_root / "acme/sentiment", root / "acme")  # placed by hand, with children below it
    for child in ("sql", "summary"):
        copy_adapter(shared_root / "acme/summary", root / "acme" / child)
    children = {child: tree_digest(root / "acme" / child) for child in ("sql", "summary")}
    request = build_training_request(
        "acme", str(write_task(data / "task.jsonl", n=32)), job_id=f"overwrite-{uuid.uuid4().hex[:8]}",
        overwrite=True, max_steps=2, effective_batch_size=4, micro_batch_size=4, max_seq_len=64, quantize="none",
    )

    await ensure_topics(kafka, default_topic_specs(topics, request_partitions=4))
    server = serve_process("nested-ids", "--adapters", str(root))
    worker_args = [
        "--model", str(model_dir), "--adapters", str(root), "--work-dir", str(tmp_path / "jobs"),
        "--dataset-root", str(data), "--device", "cpu", "--threads", "1", "--progress-interval-s", "0",
        "--bootstrap-servers", kafka_bootstrap, "--topic-prefix", topic_prefix,
    ]
    answered: Counter[str] = Counter()
    failed: list[tuple[str, ErrorCode]] = []
    with train_worker_process(worker_args, tmp_path / "train-worker.log") as worker:
        async with LoraClient(config=kafka, topics=topics, request_timeout_s=TIMEOUT_S) as client:

            async def traffic(stop: asyncio.Event) -> None:
                while not stop.is_set():
                    for adapter_id in ("acme/sql", "acme/summary"):
                        code = await outcome(client, adapter_id)
                        if code is None:
                            answered[adapter_id] += 1
                        else:
                            failed.append((adapter_id, code))

            assert await outcome(client, "acme") is None  # the hand-placed version is served
            stop = asyncio.Event()
            background = asyncio.create_task(traffic(stop))
            job = await submit_training(kafka, topics, request)
            try:
                final = await job.wait(idle_timeout_s=180)
            finally:
                await job.close()

            async def new_version_served() -> bool:
                return await outcome(client, "acme") is None and (root / "acme/.lorastream/v1").is_dir()

            await until(new_version_served)
            stop.set()
            await background
        alive = server.proc.poll() is None and worker.poll() is None

    report_counts(
        f"overwrite of acme with nested ids: job {final.state.value}; nested answered {dict(answered)}, "
        f"failed {len(failed)}; nested files unchanged="
        f"{all(tree_digest(root / 'acme' / c) == d for c, d in children.items())}; exits={0 if alive else 1}"
    )
    assert alive
    assert final.state is JobState.COMPLETED, final
    assert {child: tree_digest(root / "acme" / child) for child in children} == children
    assert failed == [] and min(answered["acme/sql"], answered["acme/summary"]) >= 1
    assert final.adapter_uri == (root / "acme/.lorastream/v1").resolve().as_uri()
