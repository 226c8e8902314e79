"""The real `openai` SDK (sync and async, streaming and not) against a gateway in front of an
inference consumer on Apache Kafka: greedy answers equal LoraClient's for the same request."""

from __future__ import annotations

import asyncio

import openai
import pytest

from schemas import AdapterEvent, Final, FinishReason, decode_reply, encode
from streamer import LoraClient, make_consumer
from streamer.kafka import start_producer
from tests.gateway.conftest import BASE_NAME
from tests.integration.conftest import ADAPTER_SPECS

pytestmark = pytest.mark.kafka

PROMPT = "the cat sat on the mat"
MESSAGES = [{"role": "system", "content": "answer briefly"}, {"role": "user", "content": "where is the cat?"}]
MAX_TOKENS = 10
MODELS = {BASE_NAME: None, **{adapter_id: adapter_id for adapter_id in ADAPTER_SPECS}}


async def direct_text(client: LoraClient, adapter_id: str | None, *, chat: bool) -> str:
    text = dict(messages=MESSAGES) if chat else dict(prompt=PROMPT)
    async for record in client.stream(adapter_id=adapter_id, max_new_tokens=MAX_TOKENS, **text):
        if isinstance(record, Final):
            return record.text
    raise AssertionError("no Final")


async def test_sdk_answers_equal_lora_client_for_base_and_two_adapters(serving, gateway_url):
    kafka, topics, _ = serving
    aclient = openai.AsyncOpenAI(base_url=gateway_url, api_key="unused", max_retries=0)
    sclient = openai.OpenAI(base_url=gateway_url, api_key="unused", max_retries=0)
    greedy = dict(max_tokens=MAX_TOKENS, temperature=0)
    async with LoraClient(config=kafka, topics=topics) as direct:
        for model, adapter_id in MODELS.items():
            expected = await direct_text(direct, adapter_id, chat=False)
            expected_chat = await direct_text(direct, adapter_id, chat=True)
            assert expected and expected_chat

            answer = await aclient.completions.create(model=model, prompt=PROMPT, **greedy)
            assert answer.choices[0].text == expected and answer.model == model
            assert answer.usage.completion_tokens >= 1
            assert answer.choices[0].finish_reason in ("length", "stop")
            stream = await aclient.completions.create(model=model, prompt=PROMPT, stream=True, **greedy)
            assert "".join([c.choices[0].text async for c in stream]) == expected
            sync = await asyncio.to_thread(sclient.completions.create, model=model, prompt=PROMPT, **greedy)
            assert sync.choices[0].text == expected

            chat = await aclient.chat.completions.create(model=model, messages=MESSAGES, **greedy)
            assert chat.choices[0].message.content == expected_chat
            assert chat.choices[0].message.role == "assistant"

            def sync_chat_stream() -> tuple[str, int]:
                chunks = list(sclient.chat.completions.create(
                    model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}, **greedy
                ))
                return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks[-1].usage.completion_tokens

            text, used = await asyncio.to_thread(sync_chat_stream)
            assert text == expected_chat and used >= 1
    assert expected != expected_chat  # the chat template shaped the prompt


async def test_leaving_a_stream_cancels_the_request_on_the_server(serving, gateway_url):
    kafka, topics, _ = serving
    aclient = openai.AsyncOpenAI(base_url=gateway_url, api_key="unused", max_retries=0)
    stream = await aclient.completions.create(
        model=BASE_NAME, prompt=PROMPT, max_tokens=900, temperature=0, stream=True, extra_body={"ignore_eos": True}
    )
    async for chunk in stream:
        request_id = chunk.id.removeprefix("cmpl-")
        break
    await stream.close()  # the HTTP connection goes away mid-stream
    results = make_consumer(kafka, topics.results)
    await results.start()
    try:
        async with asyncio.timeout(60):
            async for message in results:
                final = decode_reply(message.value)
                if final.request_id == request_id:
                    break
    finally:
        await results.stop()
    assert isinstance(final, Final) and final.finish_reason is FinishReason.CANCELLED
    assert final.usage.completion_tokens < 900
    assert request_id.startswith("anonymous:")


async def test_unknown_models_are_not_found_and_models_lists_the_adapters_topic(serving, gateway_url):
    kafka, topics, _ = serving
    aclient = openai.AsyncOpenAI(base_url=gateway_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        await aclient.completions.create(model="acme/never-trained", prompt=PROMPT, max_tokens=2)
    assert info.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        await aclient.chat.completions.create(model="../x", messages=MESSAGES, max_tokens=2)

    assert [m.id for m in (await aclient.models.list()).data] == [BASE_NAME]
    producer = await start_producer(kafka)
    try:
        event = AdapterEvent(adapter_id="acme/summary", version=1, uri="")
        await producer.send_and_wait(topics.adapters, encode(event), key=b"acme/summary")
    finally:
        await producer.stop()
    async with asyncio.timeout(30):
        while [m.id for m in (await aclient.models.list()).data] != [BASE_NAME, "acme/summary"]:
            await asyncio.sleep(0.1)
