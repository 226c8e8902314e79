"""A client in another language, played by confluent-kafka (librdkafka) with plain JSON dicts: it
writes a request by hand, reads its chunks and Final from its own reply topic, and gets the text
LoraClient gets — against Apache Kafka and against the embedded Tansu broker.

Nothing here uses lorastream's msgspec types: only the wire format (docs/wire-format.md) and the
committed JSON Schema files, as a Go, Java or Node producer would.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streamer import LoraClient, TansuBroker

pytestmark = pytest.mark.kafka

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas" / "json"
PROMPT = "the cat sat on the mat"
MAX_NEW = 10
TIMEOUT_S = 60.0


@pytest.fixture(scope="module", params=["apache-kafka", "tansu"])
def kafka_bootstrap(request, kafka_bootstrap):
    """The session's Apache Kafka, then a Tansu broker of this module's own: the `serving` fixture
    (tests/integration/conftest.py) runs the service on each in turn."""
    if request.param == "apache-kafka":
        yield kafka_bootstrap
        return
    with TansuBroker() as broker:
        yield broker.bootstrap_servers


def _schema_validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def _create_topic(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the topic exists
    admin.create_topics([NewTopic(topic, num_partitions=1)])[topic].result(timeout=30)


def _produce(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    """Publish one record and wait for the broker's acknowledgement (no idempotence: Tansu refuses it)."""
    outcome: list[Any] = []
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": False, "linger.ms": 0})
    producer.produce(topic, value, key=key, on_delivery=lambda err, _msg: outcome.append(err))
    assert producer.flush(30) == 0, "request not delivered in 30 s"
    assert outcome == [None], f"request refused by the broker: {outcome}"


def _read_answer(consumer: Consumer, request_id: str, reply_token: str) -> tuple[list[dict], dict]:
    """(chunks, last record) of one request, as a reader in any language must: only records with
    its request_id and reply_token, each (attempt, seq) once, chunks of the highest attempt, until
    a `final` or an `error`. Every record must satisfy reply-records.schema.json."""
    validator = _schema_validator("reply-records")
    chunks: dict[tuple[int, int], dict] = {}
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        message = consumer.poll(0.1)
        if message is None:
            continue
        assert message.error() is None, message.error()
        record = json.loads(message.value())
        validator.validate(record)
        records = record["chunks"] if record["kind"] == "chunks" else [record]
        for part in records:
            if part["request_id"] != request_id or part.get("reply_token") != reply_token:
                continue
            if part["kind"] in ("final", "error"):
                attempt = part["attempt"]
                return [c for (a, _), c in sorted(chunks.items()) if a == attempt], part
            chunks[(part["attempt"], part["seq"])] = part
    raise TimeoutError(f"no final for {request_id} in {TIMEOUT_S} s")


@pytest.mark.parametrize("adapter_id", [None, "acme/sentiment"])
async def test_a_librdkafka_client_gets_the_answer_lora_client_gets(serving, adapter_id):
    kafka, topics, _ = serving
    bootstrap = kafka.bootstrap_servers
    reply_topic = topics.replies_for(f"librdkafka-{uuid.uuid4().hex[:8]}")
    await asyncio.to_thread(_create_topic, bootstrap, reply_topic)
    request_id = f"rdk-{uuid.uuid4().hex}"
    reply_token = secrets.token_urlsafe(24)  # 32 characters of [A-Za-z0-9_-]
    request = {
        "kind": "request",
        "request_id": request_id,
        "prompt": PROMPT,
        "adapter_id": adapter_id,
        "params": {"max_new_tokens": MAX_NEW, "temperature": 0.0},
        "reply_to": {"topic": reply_topic, "partition": 0},
        "reply_token": reply_token,
        "created_ms": int(time.time() * 1000),
        "schema_version": 1,
    }
    _schema_validator("inference-request").validate(request)

    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "unused-with-assign", "enable.auto.commit": False,
        "fetch.wait.max.ms": 10,
    })  # fmt: skip
    try:
        # assign, not subscribe: a reply partition is the client's own, no group is needed
        consumer.assign([TopicPartition(reply_topic, 0, OFFSET_BEGINNING)])
        key = (adapter_id or "__base__").encode()
        await asyncio.to_thread(_produce, bootstrap, topics.requests, key, json.dumps(request).encode())
        chunks, last = await asyncio.to_thread(_read_answer, consumer, request_id, reply_token)
    finally:
        await asyncio.to_thread(consumer.close)

    assert last["kind"] == "final", last
    assert chunks, "a streaming request gets chunk records before its final"
    assert [c["seq"] for c in chunks] == list(range(len(chunks)))
    assert last["seq"] == len(chunks)
    assert "".join(c["text"] for c in chunks) == last["text"]
    assert last["usage"]["completion_tokens"] == sum(len(c["token_ids"]) for c in chunks)
    assert last["adapter_id"] == adapter_id
    async with LoraClient(config=kafka, topics=topics) as client:
        expected = await client.generate(PROMPT, adapter_id=adapter_id, max_new_tokens=MAX_NEW)
    assert last["text"] == expected.text


def test_a_librdkafka_group_consumer_joins_tansu_with_a_short_session_timeout():
    """Tansu answers a group's first JoinGroup after about half of `session.timeout.ms`: with
    librdkafka's default (45 s) a subscriber waits ~23 s for its first record, with 6 s about 3 s."""
    topic = f"rdk-group-{uuid.uuid4().hex[:8]}"
    with TansuBroker() as broker:
        _create_topic(broker.bootstrap_servers, topic)
        _produce(broker.bootstrap_servers, topic, b"k", b"hello")
        consumer = Consumer({
            "bootstrap.servers": broker.bootstrap_servers, "group.id": f"g-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest", "session.timeout.ms": 6000, "fetch.wait.max.ms": 10,
        })  # fmt: skip
        try:
            consumer.subscribe([topic])
            started = time.monotonic()
            value = None
            while value is None and time.monotonic() - started < 15:
                message = consumer.poll(0.2)
                if message is not None and message.error() is None:
                    value = message.value()
        finally:
            consumer.close()
    assert value == b"hello"
