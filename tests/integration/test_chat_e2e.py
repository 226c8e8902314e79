"""Chat requests end to end through Apache Kafka: LoraClient (and `lorastream send --chat`) →
requests topic → inference consumer → engine → Final, on a tiny Llama-3-style chat model.

The answer equals transformers' greedy generate on `apply_chat_template(messages,
add_generation_prompt=True)`'s ids; `ignore_eos` gives exactly max_new_tokens. The client's own
argument handling (messages as mappings or ChatMessage, one of prompt and messages) needs no broker.
"""

from __future__ import annotations

import asyncio

import pytest

from cli.main import main as cli_main
from consumers.config import ServeConfig
from consumers.inference import InferenceService
from consumers.serve import build_engine_thread
from schemas import ChatMessage, Final, FinishReason, InvalidEvent, TokenChunk
from streamer import KafkaConfig, LoraClient, TopicNames
from streamer.transport.kafka import KafkaTransport
from tests.engine.chat_models import build_chat_model, greedy_answer

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the cat sat on the mat"}]
MAX_NEW = 8


@pytest.fixture(scope="module")
def chat_model_dir(tmp_path_factory):
    return build_chat_model(tmp_path_factory.mktemp("e2e-chat"), "llama3")


@pytest.fixture
async def chat_serving(kafka_bootstrap, topic_prefix, chat_model_dir):
    kafka = KafkaConfig(bootstrap_servers=kafka_bootstrap)
    topics = TopicNames(topic_prefix)
    runner = build_engine_thread(model_path=str(chat_model_dir), device="cpu")
    service = InferenceService(KafkaTransport(kafka), topics, ServeConfig(request_partitions=1), runner)
    task = asyncio.create_task(service.run())
    ready = asyncio.create_task(service.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    assert ready in done, "inference service did not become ready in 60 s"
    yield kafka, topics
    service.stop()
    await asyncio.wait_for(task, 60)


async def test_chat_messages_through_kafka_equal_greedy_on_the_template(chat_serving, chat_model_dir):
    kafka, topics = chat_serving
    expected_ids, expected_text = greedy_answer(chat_model_dir, [ChatMessage(**m) for m in MESSAGES], MAX_NEW)
    async with LoraClient(config=kafka, topics=topics) as client:
        final = await client.generate(messages=MESSAGES, max_new_tokens=MAX_NEW)
        chunks: list[TokenChunk] = []
        async for record in client.stream(messages=[ChatMessage(**m) for m in MESSAGES], max_new_tokens=MAX_NEW):
            if not isinstance(record, Final):
                chunks.append(record)
            streamed = record
    assert final.text == expected_text and final.usage.completion_tokens == len(expected_ids)
    assert [t for c in chunks for t in c.token_ids] == expected_ids and streamed.text == expected_text


async def test_ignore_eos_gives_exactly_max_new_tokens_through_kafka(chat_serving):
    kafka, topics = chat_serving
    async with LoraClient(config=kafka, topics=topics) as client:
        fixed = await client.generate(messages=MESSAGES, max_new_tokens=24, ignore_eos=True)
    assert fixed.finish_reason is FinishReason.LENGTH and fixed.usage.completion_tokens == 24


async def test_send_chat_from_the_command_line(chat_serving, chat_model_dir, capsys):
    kafka, topics = chat_serving
    argv = [
        "send", "the cat sat on the mat", "--chat", "--system", "be brief", "--max-new-tokens", str(MAX_NEW),
        "--bootstrap-servers", kafka.bootstrap_servers, "--topic-prefix", topics.prefix,
    ]
    assert await asyncio.to_thread(cli_main, argv) == 0
    _, expected_text = greedy_answer(chat_model_dir, [ChatMessage(**m) for m in MESSAGES], MAX_NEW)
    out = capsys.readouterr().out
    assert out.startswith(expected_text) and "finish=" in out


# --- the client's arguments (no broker) --------------------------------------------------------


@pytest.mark.parametrize(
    "messages",
    [MESSAGES, [ChatMessage(**m) for m in MESSAGES], [{**m, "name": "ignored"} for m in MESSAGES]],
    ids=["mappings", "ChatMessage", "extra-keys"],
)
def test_build_request_takes_messages_as_mappings_or_chat_messages(messages):
    request = LoraClient("127.0.0.1:1").build_request(messages=messages, ignore_eos=True)
    assert request.prompt == "" and request.messages == [ChatMessage(**m) for m in MESSAGES]
    assert request.params.ignore_eos is True


@pytest.mark.parametrize(
    ("prompt", "messages"),
    [(None, None), ("", None), ("hi", MESSAGES), (None, [])],
    ids=["neither", "empty-prompt", "both", "no-messages"],
)
def test_build_request_needs_exactly_one_of_prompt_and_messages(prompt, messages):
    with pytest.raises(ValueError, match="exactly one"):
        LoraClient("127.0.0.1:1").build_request(prompt, messages=messages)


def test_a_message_without_role_or_with_a_bad_role_is_refused_at_the_caller():
    client = LoraClient("127.0.0.1:1")
    with pytest.raises(ValueError, match="role and content"):
        client.build_request(messages=[{"content": "hi"}])
    with pytest.raises(InvalidEvent):
        client.stream_request(client.build_request(messages=[{"role": "the user", "content": "hi"}]))
