"""Two bases side by side through Apache Kafka (issue 11): a tiny Llama on the default requests topic
(an existing single-base deployment) and a tiny Qwen2 in its own lane. Mixed requests for both bases
and their adapters are answered by the right base with PEFT's greedy tokens; the catalogue lists
both; a request for a base nobody serves gets `base_not_served` within a second, from LoraClient
and from the consumer of the default topic for a raw record.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from consumers.config import ServeConfig
from consumers.inference import InferenceService
from consumers.serve import build_engine_thread
from schemas import AdapterEvent, Error, ErrorCode, Final, InferenceRequest, ReplyAddress, TokenChunk, decode_reply, encode
from streamer import KafkaConfig, LoraClient, RequestFailed, TopicNames, default_topic_specs, ensure_topics, start_producer
from streamer.admin import reply_topic_spec
from streamer.catalogue import Tier
from streamer.transport.kafka import KafkaTransport
from tests.integration.peft_oracle import greedy_tokens

pytestmark = pytest.mark.kafka

LLAMA, QWEN = "tiny-llama", "tiny-qwen2"  # the model directories' names: the engines' base names
ADAPTERS = {  # base → adapter id → (rank, alpha, targets, seed)
    LLAMA: {"llama/sentiment": (8, 16, ("q_proj", "v_proj"), 11), "llama/summary": (4, 8, ("k_proj", "o_proj", "down_proj"), 12)},
    QWEN: {"qwen/sentiment": (8, 16, ("q_proj", "v_proj"), 21), "qwen/summary": (4, 8, ("q_proj", "up_proj"), 22)},
}
PROMPTS = ("the cat sat on the mat", "a long river")
MAX_NEW = 8
TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """base → (model_dir, adapter_root): two families, their adapters made with peft."""
    from gpu_engine.tiny import build_tiny_adapter, build_tiny_model

    root = tmp_path_factory.mktemp("many-bases")
    built = {}
    for base, arch, seed in ((LLAMA, "llama", 0), (QWEN, "qwen2", 5)):
        model_dir = build_tiny_model(root / base, arch=arch, seed=seed)
        for adapter_id, (rank, alpha, targets, adapter_seed) in ADAPTERS[base].items():
            build_tiny_adapter(model_dir, root / f"adapters-{base}" / adapter_id, r=rank, alpha=alpha,
                               target_modules=targets, seed=adapter_seed)
        built[base] = (model_dir, root / f"adapters-{base}")
    return built


@contextlib.asynccontextmanager
async def consumer(kafka: KafkaConfig, topics: TopicNames, model_dir: Path, adapter_root: Path, **config):
    runner = build_engine_thread(model_path=str(model_dir), adapter_root=str(adapter_root), device="cpu")
    serve = ServeConfig(request_partitions=2, catalogue_interval_s=0.5, **config)
    service = InferenceService(KafkaTransport(kafka), topics, serve, runner)
    task = asyncio.create_task(service.run())
    ready = asyncio.create_task(service.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    assert ready in done, "the consumer did not start polling in 60 s"
    try:
        yield service
    finally:
        service.stop()
        await asyncio.wait_for(task, 60)


async def publish_registry(kafka: KafkaConfig, topics: TopicNames) -> None:
    """Each adapter registered for its base (uri "": under each consumer's own adapter root)."""
    producer = await start_producer(kafka)
    try:
        for base, adapters in ADAPTERS.items():
            for adapter_id in adapters:
                event = AdapterEvent(adapter_id, 1, "", base_model=base)
                await producer.send_and_wait(topics.adapters, encode(event), key=adapter_id.encode())
    finally:
        await producer.stop()


async def streamed_tokens(client: LoraClient, prompt: str, adapter_id: str | None, base: str | None) -> tuple[list[int], Final]:
    tokens: list[int] = []
    async for record in client.stream(prompt, adapter_id=adapter_id, base=base, max_new_tokens=MAX_NEW, timeout_s=TIMEOUT_S):
        if isinstance(record, TokenChunk):
            tokens.extend(record.token_ids)
        else:
            return tokens, record
    raise AssertionError("the stream ended without a Final")


async def until_tier(client: LoraClient, base: str, adapter_id: str, timeout_s: float = 20.0) -> Tier:
    """The adapter's tier once its consumer's announcement (every 0.5 s here) carries it."""
    async with asyncio.timeout(timeout_s):
        while True:
            listed = {a.adapter_id: a for a in await client.adapters(base=base)}
            if listed[adapter_id].tier is not None:
                return listed[adapter_id].tier
            await asyncio.sleep(0.2)  # announcements are periodic: there is no event to wait on


async def test_two_bases_answer_their_own_requests_exactly_and_an_unserved_base_is_refused_at_once(
    kafka_config, topic_names, bases
):
    kafka, topics = kafka_config, topic_names
    await ensure_topics(kafka, default_topic_specs(topics, request_partitions=2))
    await publish_registry(kafka, topics)
    llama_dir, llama_adapters = bases[LLAMA]
    qwen_dir, qwen_adapters = bases[QWEN]
    async with (
        consumer(kafka, topics, llama_dir, llama_adapters, consumer_id="llama-0") as llama,
        consumer(kafka, topics, qwen_dir, qwen_adapters, consumer_id="qwen-0", base_lane=True) as qwen,
        LoraClient(config=kafka, topics=topics) as client,
    ):
        assert (llama.lane.topic, qwen.lane.topic) == (topics.requests, topics.requests_for(QWEN))
        assert qwen.lane.group_id == f"{ServeConfig.group_id}.{QWEN}"

        # mixed requests for both bases and their adapters, all in flight together
        cases = [(p, None, None) for p in PROMPTS]  # the default base
        cases += [(p, a, base) for base, adapters in ADAPTERS.items() for a in (None, *adapters) for p in PROMPTS]
        answers = await asyncio.gather(*(streamed_tokens(client, p, a, b) for p, a, b in cases))
        for (prompt, adapter_id, base), (tokens, final) in zip(cases, answers, strict=True):
            served = base or LLAMA
            model_dir, adapter_root = bases[served]
            expected = greedy_tokens(model_dir, None if adapter_id is None else adapter_root / adapter_id, prompt, MAX_NEW)
            assert tokens == expected, (prompt, adapter_id, base)
            assert final.lineage is not None and final.lineage.base_name == served
            assert final.served_by == ("qwen-0" if served == QWEN else "llama-0")

        # the catalogue: both bases live, with their lanes, families and the adapters' tiers
        models = {m.base: m for m in await client.models()}
        assert models[LLAMA].is_live and models[QWEN].is_live
        (llama_entry,), (qwen_entry,) = models[LLAMA].consumers, models[QWEN].consumers
        assert (llama_entry.requests_topic, llama_entry.architecture) == (topics.requests, "llama")
        assert (qwen_entry.requests_topic, qwen_entry.architecture) == (topics.requests_for(QWEN), "qwen2")
        assert qwen_entry.max_model_len > 0 and qwen_entry.group_id == qwen.lane.group_id
        listed = await client.adapters(base=QWEN)
        assert [a.adapter_id for a in listed] == sorted(ADAPTERS[QWEN]) and all(a.is_live for a in listed)
        assert await until_tier(client, QWEN, "qwen/sentiment") in (Tier.DEVICE, Tier.HOST)

        # a base nobody serves: refused by the client at once, never sent
        started = time.monotonic()
        with pytest.raises(RequestFailed) as refused:
            await client.generate(PROMPTS[0], base="tiny-gemma", max_new_tokens=4)
        assert refused.value.code is ErrorCode.BASE_NOT_SERVED and time.monotonic() - started < 1.0

        # …and a raw record naming it on the default topic: its consumer answers base_not_served
        reply = topics.replies_for("raw-many-bases")
        await ensure_topics(kafka, [reply_topic_spec(reply)])
        raw = InferenceRequest("raw-1", PROMPTS[0], base="tiny-gemma", reply_to=ReplyAddress(reply, 0))
        error, elapsed_s = await raw_answer(kafka, topics, reply, raw)
        assert isinstance(error, Error) and error.code is ErrorCode.BASE_NOT_SERVED
        assert elapsed_s < 1.0


async def raw_answer(kafka: KafkaConfig, topics: TopicNames, reply: str, request: InferenceRequest):
    """Send `request` as a raw record on the default requests topic: (the first answer record on
    `reply`, seconds from the send to its arrival)."""
    from streamer import make_consumer

    reader = make_consumer(kafka, reply, auto_offset_reset="earliest")
    await reader.start()
    producer = await start_producer(kafka)
    try:
        started = time.monotonic()
        await producer.send_and_wait(topics.requests, encode(request), key=b"__base__")
        async with asyncio.timeout(TIMEOUT_S):
            async for record in reader:
                return decode_reply(record.value), time.monotonic() - started
    finally:
        await producer.stop()
        await reader.stop()
