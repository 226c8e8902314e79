"""Chat requests through the InferenceService on a bus (memory, and Apache Kafka with `kafka`).

With a real engine on a tiny Llama-3-style model: the answer to `messages` is the greedy answer
for `apply_chat_template(messages, add_generation_prompt=True)`'s ids; on a model without a chat
template the request is answered `chat_template_missing` and dead-lettered. With the fake engine:
messages and ignore_eos reach the engine's request as sent.
"""

from __future__ import annotations

import pytest

from consumers.serve import build_engine_thread
from gpu_engine.types import ChatMessage as EngineChatMessage
from schemas import ChatMessage, DeadLetter, Error, ErrorCode, Final, InferenceRequest, ReplyAddress, SamplingParams, decode
from tests.consumers.scenarios.harness import Bus, FakeEngine
from tests.engine.chat_models import build_chat_model, greedy_answer

TOKEN = "reply-token-chat-0123456789"
MESSAGES = [ChatMessage("system", "be brief"), ChatMessage("user", "the quick dog runs over the river")]
MAX_NEW = 8


@pytest.fixture(scope="module")
def llama3_chat_model(tmp_path_factory):
    return build_chat_model(tmp_path_factory.mktemp("scenario-chat"), "llama3")


def chat_request(request_id: str, reply: str, **params) -> InferenceRequest:
    return InferenceRequest(
        request_id, messages=MESSAGES, params=SamplingParams(max_new_tokens=MAX_NEW, **params),
        reply_to=ReplyAddress(reply, 0), reply_token=TOKEN,
    )


async def test_a_chat_request_is_answered_for_the_rendered_template(bus: Bus, llama3_chat_model):
    reply = bus.reply_topic()
    await bus.create_reply_topic(reply)
    await bus.start_service(build_engine_thread(model_path=str(llama3_chat_model), device="cpu"))
    await bus.request(chat_request("chat-1", reply), 0)
    records = await bus.replies(reply, lambda rs: any(isinstance(r, Final | Error) for r in rs))
    final = records[-1]
    assert isinstance(final, Final), final
    expected_ids, expected_text = greedy_answer(llama3_chat_model, MESSAGES, MAX_NEW)
    streamed = [t for r in records[:-1] for t in r.token_ids]
    assert streamed == expected_ids and final.text == expected_text
    assert final.usage.completion_tokens == len(expected_ids)


async def test_a_model_without_a_chat_template_answers_chat_template_missing(bus: Bus, tmp_path):
    from gpu_engine.tiny import build_tiny_model

    model_dir = build_tiny_model(tmp_path / "plain")
    reply = bus.reply_topic()
    await bus.create_reply_topic(reply)
    await bus.start_service(build_engine_thread(model_path=str(model_dir), device="cpu"))
    await bus.request(chat_request("chat-2", reply), 0)
    (error,) = await bus.replies(reply, lambda rs: len(rs) >= 1)
    assert isinstance(error, Error) and error.code is ErrorCode.CHAT_TEMPLATE_MISSING and error.reply_token == TOKEN
    (letter,) = [decode(r.value, DeadLetter) for r in await bus.read(bus.topics.requests_dlq, lambda rs: len(rs) >= 1)]
    assert (letter.request_id, letter.code) == ("chat-2", ErrorCode.CHAT_TEMPLATE_MISSING)


async def test_messages_and_ignore_eos_reach_the_engine(memory_bus: Bus):
    engine = FakeEngine()
    reply = memory_bus.reply_topic()
    await memory_bus.create_reply_topic(reply)
    await memory_bus.start_service(engine)
    await memory_bus.request(chat_request("chat-3", reply, ignore_eos=True), 0)
    await memory_bus.request(InferenceRequest("plain-3", "one two", reply_to=ReplyAddress(reply, 0)), 0)
    await memory_bus.replies(reply, lambda rs: sum(isinstance(r, Final) for r in rs) >= 2)
    chat, plain = engine.submitted
    assert chat.messages == tuple(EngineChatMessage(m.role, m.content) for m in MESSAGES) and chat.sampling.ignore_eos
    assert plain.messages is None and plain.prompt == "one two" and not plain.sampling.ignore_eos
