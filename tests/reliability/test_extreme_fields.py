"""Extreme values in every field of every event kind, on every topic, beside good traffic; and a
forged answer that outranks the real one by its attempt.

One real `lorastream serve` process and one training worker. Bad records (from
tests/schemas/extreme_fields.py) go to the requests, control, adapters and training-requests
topics, to a client's reply topic and to the training-events topic, while good requests and a
good training job run. Every bad request gets its typed Error (when a reply address can be
salvaged) and a dead letter; every good request and the job are answered; nothing exits.
Bad control and registry records name live requests, the job and a served adapter, so one
accepted by mistake would cancel or retire something good.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import msgspec
import pytest
from aiokafka import AIOKafkaProducer

import schemas
from consumers.training.config import TrainWorkerConfig
from consumers.training.jobs import salvage_job_id
from consumers.training.worker import TrainingWorker
from land import builtin_train_file
from streamer.transport.kafka import KafkaTransport
from schemas import (
    DatasetRef,
    DeadLetter,
    Error,
    ErrorCode,
    Final,
    FinishReason,
    InvalidEvent,
    JobState,
    TokenChunk,
    decode,
    decode_reply,
    decode_training_event,
    encode,
)
from streamer import KafkaConfig, LoraClient, TopicNames, ensure_topics, make_consumer, start_producer
from streamer.admin import reply_topic_spec
from streamer.training_client import build_training_request, submit_training
from tests.integration.conftest import ADAPTER_SPECS
from tests.schemas.extreme_fields import BODIES, VALID_EXTREMES, Case, cases_for

pytestmark = pytest.mark.kafka
T = TypeVar("T")

TIMEOUT_S = 180
NUM_GOOD = 24
MAX_KAFKA_RECORD_BYTES = 512 * 1024  # bigger cases (1 MiB answer text) are covered by the unit table
SERVED_ADAPTER = "acme/sentiment"
GOOD_JOB = "extreme-good-job"
ADAPTERS = [None, *ADAPTER_SPECS]


@contextlib.asynccontextmanager
async def training_worker(kafka: KafkaConfig, topics: TopicNames, model_dir: Path, tmp_path: Path):
    config = TrainWorkerConfig(
        base_model_path=str(model_dir), adapter_root=str(tmp_path / "trained"), work_dir=str(tmp_path / "jobs"),
        base_model_name="tiny", job_threads=1, checkpoint_every_steps=100, progress_interval_s=0.0,
    )  # fmt: skip
    worker = TrainingWorker(KafkaTransport(kafka), topics, config, builtin_tasks=builtin_train_file)
    task = asyncio.create_task(worker.run())
    ready = asyncio.create_task(worker.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    try:
        yield task
    finally:
        worker.stop()
        await asyncio.wait_for(task, 60)


def encoded(cases: list[Case], **overrides) -> list[bytes]:
    """Each case's bytes with `overrides` (an id of something good to aim at), if Kafka takes them."""
    values = [case.encode(**overrides) for case in cases]
    return [value for value in values if len(value) <= MAX_KAFKA_RECORD_BYTES]


async def send_all(producer: AIOKafkaProducer, topic: str, values: list[bytes], key: bytes) -> None:
    for value in values:
        await producer.send(topic, value, key=key)
    await producer.flush()


async def read_until(kafka: KafkaConfig, topic: str, decoder: Callable[[bytes], T], count: int) -> list[T]:
    """Decodable records of `topic` from its start, until there are `count` (or TIMEOUT_S passes)."""
    consumer = make_consumer(kafka, topic, auto_offset_reset="earliest")
    await consumer.start()
    events: list[T] = []
    try:
        async with asyncio.timeout(TIMEOUT_S):
            while len(events) < count:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for record in records:
                        with contextlib.suppress(InvalidEvent):  # what this test sent there itself
                            events.append(decoder(record.value))
    except TimeoutError:
        pass
    finally:
        await consumer.stop()
    return events


def expected_error(raw: bytes) -> ErrorCode | None:
    """The code of the Error a refused request's sender gets, or None when it has no reply address."""
    with pytest.raises(InvalidEvent) as refused:
        schemas.decode_request(raw)
    exc = refused.value
    return exc.code if exc.request_id is not None and exc.reply_to is not None else None


async def test_extreme_fields_on_every_topic(
    kafka_bootstrap, topic_prefix, serve_process, tiny_model, tmp_path, report_counts
):
    kafka, topics = KafkaConfig(bootstrap_servers=kafka_bootstrap), TopicNames(topic_prefix)
    serve = serve_process("extreme")
    reply_topic = topics.replies_for("extreme-fields")
    reply_to = {"topic": reply_topic, "partition": 0}
    await ensure_topics(kafka, [reply_topic_spec(reply_topic)])
    good_ids = [f"good-{i}" for i in range(NUM_GOOD)]

    bad_requests = [
        value
        for i, case in enumerate(cases_for(schemas.InferenceRequest))
        if len(value := case.encode(request_id=f"bad-{i}", reply_to=reply_to)) <= MAX_KAFKA_RECORD_BYTES
    ]
    expected_errors = Counter(code for code in map(expected_error, bad_requests) if code is not None)
    valid_extremes = {
        f"valid-{i}": msgspec.json.encode(
            {**BODIES[schemas.InferenceRequest], "base": None, "request_id": f"valid-{i}", "reply_to": reply_to, **fields}
        )
        for i, (_, fields) in enumerate(VALID_EXTREMES)
    }
    control = encoded(cases_for(schemas.CancelRequest), request_id=good_ids[0])
    control += encoded(cases_for(schemas.CancelJob), job_id=GOOD_JOB)
    adapters = encoded(cases_for(schemas.AdapterEvent), adapter_id=SERVED_ADAPTER, deleted=True, uri="")
    training = [
        value
        for i, case in enumerate(cases_for(schemas.TrainingRequest))
        if len(value := case.encode(job_id=f"bad-train-{i}")) <= MAX_KAFKA_RECORD_BYTES
    ]
    failing_jobs = {job_id for job_id in map(salvage_job_id, training) if job_id is not None}
    replies = [
        value
        for kind in (schemas.TokenChunk, schemas.ChunkBatch, schemas.Final, schemas.Error)
        for value in encoded(cases_for(kind), request_id=good_ids[1])
    ]
    training_events = encoded(cases_for(schemas.TrainingEvent), job_id=GOOD_JOB)

    async with (
        training_worker(kafka, topics, tiny_model[0], tmp_path) as worker_task,
        LoraClient(config=kafka, topics=topics, request_timeout_s=TIMEOUT_S) as client,
    ):
        await client.generate("warm up", max_new_tokens=2)  # the service is up and reading
        job_request = build_training_request(
            "acme/extreme-good", DatasetRef(task="sentiment"), job_id=GOOD_JOB, base_model="tiny", max_steps=1,
            effective_batch_size=4, micro_batch_size=4, max_seq_len=64, quantize="none",
        )  # fmt: skip
        job = await submit_training(kafka, topics, job_request)
        good = [
            asyncio.create_task(
                client.generate(f"good {i}", ADAPTERS[i % len(ADAPTERS)], max_new_tokens=40, request_id=rid)
            )
            for i, rid in enumerate(good_ids)
        ]
        producer = await start_producer(kafka)
        try:
            await send_all(producer, client.reply_to.topic, replies, key=good_ids[1].encode())
            await send_all(producer, topics.control, control, key=b"control")
            await send_all(producer, topics.adapters, adapters, key=SERVED_ADAPTER.encode())
            await send_all(producer, topics.training_requests, training, key=b"bad-train")
            await send_all(producer, topics.training_events, training_events, key=GOOD_JOB.encode())
            await send_all(producer, topics.requests, bad_requests, key=b"bad")
            await send_all(producer, topics.requests, list(valid_extremes.values()), key=b"valid")
        finally:
            await producer.stop()
        finals = await asyncio.wait_for(asyncio.gather(*good), TIMEOUT_S)
        async with job:
            job_events = [event async for event in job.events(idle_timeout_s=TIMEOUT_S)]
        # long after the bad registry records: the adapter they named is still served
        late = await client.generate("after the registry records", SERVED_ADAPTER, max_new_tokens=4)
        forged_seen = client.num_forged_records

        answers = await read_until(
            kafka, reply_topic, decode_reply, sum(expected_errors.values()) + len(valid_extremes)
        )
        letters = await read_until(
            kafka, topics.requests_dlq, lambda value: decode(value, DeadLetter), len(bad_requests) + len(training)
        )
        train_failed = [
            event
            for event in await read_until(
                kafka, topics.training_events, decode_training_event, len(failing_jobs) + len(job_events)
            )
            if event.job_id in failing_jobs
        ]
        worker_alive = not worker_task.done()
    serve_alive = serve.proc.poll() is None

    errors = Counter(r.code for r in answers if isinstance(r, Error))
    valid_answered = {r.request_id for r in answers if isinstance(r, Final)}
    request_letters = [letter for letter in letters if letter.source_topic == topics.requests]
    training_letters = [letter for letter in letters if letter.source_topic == topics.training_requests]
    report_counts(
        f"extreme fields: requests bad={len(bad_requests)} errors={sum(errors.values())} "
        f"dead letters={len(request_letters)}; good answered={len(finals)}/{NUM_GOOD}, valid extremes "
        f"answered={len(valid_answered)}/{len(valid_extremes)}; control bad={len(control)}; adapters "
        f"bad={len(adapters)}; training requests bad={len(training)} failed events={len(train_failed)} "
        f"dead letters={len(training_letters)}, good job {job_events[-1].state.value}; reply records "
        f"bad={len(replies)}; training events bad={len(training_events)}; serve alive={serve_alive}, "
        f"training worker alive={worker_alive}"
    )
    assert serve_alive and worker_alive
    assert [f.request_id for f in finals] == good_ids
    assert all(f.finish_reason in (FinishReason.LENGTH, FinishReason.EOS) for f in finals)  # none cancelled
    assert late.adapter_id == SERVED_ADAPTER
    assert valid_answered == set(valid_extremes)
    assert errors == expected_errors and sum(errors.values()) > 0  # NaN leaves no reply address to salvage
    assert sorted(letter.original for letter in request_letters) == sorted(bad_requests)
    assert len(training_letters) == len(training)
    assert {event.job_id for event in train_failed} == failing_jobs
    assert {event.code for event in train_failed} <= {ErrorCode.INVALID_REQUEST, ErrorCode.MALFORMED}
    assert job_events[-1].state is JobState.COMPLETED, job_events[-1]
    assert job_events[-1].adapter_id == "acme/extreme-good"
    assert forged_seen == 0  # undecodable reply records never reach the demux


async def test_forged_answer_with_attempt_1000_never_outranks_the_real_one(
    kafka_bootstrap, topic_prefix, serve_process, report_counts
):
    """A writer who knows a request_id and its reply address, but not its reply_token, sends
    an Error and a Final of attempt 1000 while the real answer streams."""
    kafka, topics = KafkaConfig(bootstrap_servers=kafka_bootstrap), TopicNames(topic_prefix)
    serve = serve_process("victim")
    async with LoraClient(config=kafka, topics=topics, request_timeout_s=TIMEOUT_S) as victim:
        await victim.generate("warm up", max_new_tokens=2)
        ignored_before = victim.num_ignored_records
        forger = await start_producer(kafka)
        chunks: list[TokenChunk] = []
        final = None
        try:
            async for record in victim.stream("story begins", max_new_tokens=200, request_id="victim-1"):
                if isinstance(record, Final):
                    final = record
                    break
                chunks.append(record)
                if len(chunks) == 1:
                    await forge(forger, victim.reply_to, "victim-1")
        finally:
            await forger.stop()
        # On a loaded machine the real answer can end before the forged records are read; those
        # that come later are ignored (nobody waits for the request) instead of dropped as forged.
        deadline = time.monotonic() + 10
        while victim.num_forged_records + victim.num_ignored_records - ignored_before < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        forged_seen = victim.num_forged_records
        late = victim.num_ignored_records - ignored_before
    serve_alive = serve.proc.poll() is None
    report_counts(
        f"forged answers: forged records dropped={forged_seen} arrived after the answer={late} "
        f"real chunks={len(chunks)} real final attempt={final.attempt if final else None} serve alive={serve_alive}"
    )
    assert final is not None and final.attempt < 1000
    assert "".join(c.text for c in chunks) == final.text
    assert forged_seen + late == 3, "every forged record should have been read and dropped"
    assert serve_alive


async def forge(producer: AIOKafkaProducer, reply_to: schemas.ReplyAddress, request_id: str) -> None:
    forged = [
        Error(request_id, 1000, 0, ErrorCode.INTERNAL, "forged: no token"),
        Error(request_id, 1000, 0, ErrorCode.INTERNAL, "forged: a guessed token", reply_token="g" * 22),
        Final(request_id, 1000, 0, FinishReason.EOS, "forged text", reply_token="f" * 22),
    ]
    for record in forged:
        await producer.send_and_wait(
            reply_to.topic, encode(record), key=request_id.encode(), partition=reply_to.partition
        )
