"""LoraClient against real Kafka, with the test playing the inference service."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from schemas import (
    Error,
    ErrorCode,
    Final,
    FinishReason,
    InferenceRequest,
    InvalidEvent,
    ReplyRecord,
    TokenChunk,
)
from streamer import (
    BASE_MODEL_KEY,
    ClientClosed,
    KafkaConfig,
    LoraClient,
    RequestFailed,
    RequestTimeout,
    TopicNames,
)
from tests.streamer.fake_service import FakeService, answer_records, expected_echo


async def collect(client: LoraClient, prompt: str, adapter_id: str | None = None, **kw):
    """(chunk texts, final) of one streamed request."""
    texts: list[str] = []
    async for record in client.stream(prompt, adapter_id, **kw):
        if isinstance(record, TokenChunk):
            texts.append(record.text)
        else:
            return texts, record
    raise AssertionError("the stream ended without a Final")


async def test_stream_round_trip(kafka_config: KafkaConfig, topic_names: TopicNames) -> None:
    async with (
        FakeService(kafka_config, topic_names) as service,
        LoraClient(config=kafka_config, topics=topic_names) as client,
    ):
        texts, final = await collect(
            client, "hi there", "acme/sql", max_new_tokens=9, temperature=0.5, stop=["\n"]
        )
        key, request = await asyncio.wait_for(service.requests.get(), 10)
    assert "".join(texts) == final.text == expected_echo("hi there", "acme/sql")
    assert len(texts) > 1 and isinstance(final, Final)
    assert key == b"acme/sql"
    assert request.reply_to == client.reply_to and request.stream is True
    assert request.created_ms > 0 and request.params.max_new_tokens == 9
    assert request.params.temperature == 0.5 and request.params.stop == ["\n"]


async def test_generate_asks_for_no_chunks(
    kafka_config: KafkaConfig, topic_names: TopicNames
) -> None:
    async with (
        FakeService(kafka_config, topic_names) as service,
        LoraClient(config=kafka_config, topics=topic_names) as client,
    ):
        final = await client.generate("q", deadline_s=30, priority=3)
        hot = await client.generate("q", "hot/adapter", partition_key="hot/adapter#3")
        (key, request), (hot_key, _) = service.requests.get_nowait(), service.requests.get_nowait()
    assert final.text == expected_echo("q") and hot.text == expected_echo("q", "hot/adapter")
    assert key == BASE_MODEL_KEY.encode() and hot_key == b"hot/adapter#3"
    assert request.stream is False and request.priority == 3
    assert request.deadline_ms is not None and request.deadline_ms > request.created_ms


async def test_fifty_concurrent_streams(kafka_config: KafkaConfig, topic_names: TopicNames) -> None:
    adapters = [None, "a/one", "a/two"]
    async with (
        FakeService(kafka_config, topic_names),
        LoraClient(config=kafka_config, topics=topic_names) as client,
    ):
        results = await asyncio.wait_for(
            asyncio.gather(*(collect(client, f"p{i}", adapters[i % 3]) for i in range(50))), 30
        )
        assert client.num_waiting == 0
    for i, (texts, final) in enumerate(results):
        assert "".join(texts) == final.text == expected_echo(f"p{i}", adapters[i % 3])


def replayed_with_retry(request: InferenceRequest) -> list[ReplyRecord]:
    """Duplicates, a consumer restart (attempt 1 re-serves from the start), late old records."""
    rid, token = request.request_id, request.reply_token
    first = answer_records(rid, "Hello world", chunk_chars=3, reply_token=token)  # Hel|lo |wor|ld|Final
    retry = answer_records(rid, "Hello world", attempt=1, chunk_chars=5, reply_token=token)  # Hello| worl|d|Final
    return [first[0], first[0], first[1], retry[0], first[2], retry[1], retry[1], retry[2],
            first[3], retry[3], retry[3], first[4]]  # fmt: skip


async def test_duplicates_and_superseded_attempts_never_reach_the_user(
    kafka_config: KafkaConfig, topic_names: TopicNames
) -> None:
    async with (
        FakeService(kafka_config, topic_names, script=replayed_with_retry),
        LoraClient(config=kafka_config, topics=topic_names) as client,
    ):
        records = [record async for record in client.stream("x")]
        assert client.num_dropped_records == 5  # the two after the Final may be unread yet
    texts = [r.text for r in records if isinstance(r, TokenChunk)]
    finals = [r for r in records if isinstance(r, Final)]
    assert texts == ["Hel", "lo ", "worl", "d"]
    assert len(finals) == 1 and finals[0].attempt == 1 and finals[0].text == "Hello world"


async def test_error_record_raises_request_failed(
    kafka_config: KafkaConfig, topic_names: TopicNames
) -> None:
    def refuse(request: InferenceRequest) -> list[ReplyRecord]:
        return [
            Error(
                request.request_id, 0, 0, ErrorCode.ADAPTER_NOT_FOUND, "no such adapter",
                reply_token=request.reply_token,
            )
        ]  # fmt: skip

    async with (
        FakeService(kafka_config, topic_names, script=refuse),
        LoraClient(config=kafka_config, topics=topic_names) as client,
    ):
        with pytest.raises(RequestFailed) as failed:
            await client.generate("x", "missing/adapter")
    assert failed.value.code is ErrorCode.ADAPTER_NOT_FOUND
    assert failed.value.message == "no such adapter"


def forged_first(request: InferenceRequest) -> list[ReplyRecord]:
    """Records of a writer who knows the request_id and reply address but not the reply_token,
    with an attempt that outranks the real answer's, sent before it."""
    rid, token = request.request_id, request.reply_token
    forged = [
        Error(rid, 1000, 0, ErrorCode.INTERNAL, "forged, no token"),
        Error(rid, 1000, 0, ErrorCode.INTERNAL, "forged, a guessed token", reply_token="g" * 22),
        TokenChunk(rid, 1000, 0, "forged text", reply_token="f" * 22),
    ]
    return [*forged, *answer_records(rid, expected_echo(request.prompt), reply_token=token)]


async def test_forged_answers_with_a_higher_attempt_are_dropped(
    kafka_config: KafkaConfig, topic_names: TopicNames
) -> None:
    async with (
        FakeService(kafka_config, topic_names, script=forged_first),
        LoraClient(config=kafka_config, topics=topic_names) as client,
    ):
        texts, final = await collect(client, "victim")
        streamed = await client.generate("victim too")
        assert client.num_forged_records == 6
    assert "".join(texts) == final.text == expected_echo("victim") and final.attempt == 0
    assert streamed.text == expected_echo("victim too")


async def test_every_request_carries_its_own_reply_token(
    kafka_config: KafkaConfig, topic_names: TopicNames
) -> None:
    async with (
        FakeService(kafka_config, topic_names) as service,
        LoraClient(config=kafka_config, topics=topic_names) as client,
    ):
        built = client.build_request("mine")
        own = msgspec.structs.replace(built, request_id="own-token", reply_token="caller-chosen-token-0")
        bare = msgspec.structs.replace(built, request_id="no-token", reply_token=None)
        await client.generate("a")
        await client.generate("b")
        assert (await client.stream_request(own).final()).text == expected_echo("mine")
        assert (await client.stream_request(bare).final()).text == expected_echo("mine")
        tokens = [service.requests.get_nowait()[1].reply_token for _ in range(4)]
    assert len(set(tokens)) == 4 and all(t and len(t) >= 16 for t in tokens)
    assert tokens[2] == "caller-chosen-token-0"


async def test_no_answer_times_out_and_cancels(
    kafka_config: KafkaConfig, topic_names: TopicNames
) -> None:
    async with (
        FakeService(kafka_config, topic_names, script=lambda request: []) as service,
        LoraClient(config=kafka_config, topics=topic_names) as client,
    ):
        with pytest.raises(RequestTimeout) as timed_out:
            await client.generate("x", request_id="slow-1", timeout_s=0.5)
        assert await service.next_cancel() == "slow-1"
        assert client.num_waiting == 0
    assert timed_out.value.request_id == "slow-1"


def first_chunk_only(request: InferenceRequest) -> list[ReplyRecord]:
    return answer_records(request.request_id, "and so on and on", reply_token=request.reply_token)[:1]


async def test_leaving_a_stream_early_publishes_a_cancel(
    kafka_config: KafkaConfig, topic_names: TopicNames
) -> None:
    async with (
        FakeService(kafka_config, topic_names, script=first_chunk_only) as service,
        LoraClient(config=kafka_config, topics=topic_names) as client,
    ):
        async for _ in client.stream("x", request_id="by-break"):
            break
        assert await service.next_cancel() == "by-break"

        async with client.stream("x", request_id="by-with") as answer:
            await anext(answer)
        assert await service.next_cancel() == "by-with"

        first_chunk = asyncio.Event()

        async def read_forever() -> None:
            async for _ in client.stream("x", request_id="by-task"):
                first_chunk.set()

        task = asyncio.create_task(read_forever())
        await asyncio.wait_for(first_chunk.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await service.next_cancel() == "by-task"
        assert client.num_waiting == 0


async def test_late_records_for_finished_requests_are_ignored(
    kafka_config: KafkaConfig, topic_names: TopicNames
) -> None:
    async with (
        FakeService(kafka_config, topic_names) as service,
        LoraClient(config=kafka_config, topics=topic_names) as client,
    ):
        first = await client.generate("one", request_id="done-1")
        late = [TokenChunk("done-1", 2, 0, "late"), Final("done-1", 2, 1, FinishReason.EOS, "?")]
        await service.send(client.reply_to, late)
        second = await client.generate("two")  # the reader has passed the late records by now
        assert client.num_ignored_records >= 2
    assert (first.text, second.text) == (expected_echo("one"), expected_echo("two"))


async def test_close_wakes_waiting_streams(
    kafka_config: KafkaConfig, topic_names: TopicNames
) -> None:
    async with FakeService(kafka_config, topic_names, script=lambda request: []) as service:
        client = LoraClient(config=kafka_config, topics=topic_names)
        await client.start()
        waiting = asyncio.create_task(client.generate("x"))
        await asyncio.wait_for(service.requests.get(), 10)
        await client.close()
        with pytest.raises(ClientClosed):
            await asyncio.wait_for(waiting, 10)
        with pytest.raises(ClientClosed):
            await client.generate("after close")


async def test_invalid_requests_are_refused_before_sending(
    kafka_config: KafkaConfig, topic_names: TopicNames
) -> None:
    async with LoraClient(config=kafka_config, topics=topic_names) as client:
        with pytest.raises(InvalidEvent):
            await client.generate("x", "../etc/passwd")
        with pytest.raises(InvalidEvent):
            await client.generate("x", max_new_tokens=0)
        assert client.num_waiting == 0


def test_client_arguments_are_validated() -> None:
    with pytest.raises(ValueError):
        LoraClient("h:1", reply_topic="shared")
    with pytest.raises(ValueError):
        LoraClient("h:1", reply_topic="shared", reply_partition=-1)
    with pytest.raises(ValueError):
        LoraClient("h:1", request_timeout_s=0)
    with pytest.raises(ValueError):
        LoraClient("h:1", client_id="no spaces")


def run_on_uvloop(cfg: KafkaConfig, names: TopicNames) -> tuple[list[Final], str]:
    import uvloop

    async def main() -> tuple[list[Final], str]:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        async with (
            FakeService(cfg, names, script=first_chunk_or_echo) as service,
            LoraClient(config=cfg, topics=names) as client,
        ):
            finals = await asyncio.gather(*(client.generate(f"u{i}") for i in range(10)))
            async for _ in client.stream("hang", request_id="uv-break"):
                break
            return list(finals), await service.next_cancel()

    return uvloop.run(main())


def first_chunk_or_echo(request: InferenceRequest) -> list[ReplyRecord]:
    records = answer_records(
        request.request_id, expected_echo(request.prompt), stream=True, reply_token=request.reply_token
    )
    return records[:1] if request.prompt == "hang" else records[-1:]


async def test_client_under_uvloop(kafka_config: KafkaConfig, topic_names: TopicNames) -> None:
    finals, cancelled = await asyncio.to_thread(run_on_uvloop, kafka_config, topic_names)
    assert [f.text for f in finals] == [expected_echo(f"u{i}") for i in range(10)]
    assert cancelled == "uv-break"
