"""OpenAI request bodies → Generation: every field mapped, accepted at its no-op value, or refused."""

from __future__ import annotations

import pytest

from gateway.errors import ApiError
from gateway.requests import CHAT_FIELDS, COMPLETION_FIELDS, DEFAULT_ONLY, parse_chat, parse_completion

DEFAULT_MAX = 99


def completion(**fields):
    return parse_completion({"model": "m", "prompt": "hi", **fields}, DEFAULT_MAX)


def chat(**fields):
    return parse_chat({"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}, DEFAULT_MAX)


def refusal(parse, **fields) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse(**fields)
    assert info.value.status == 400
    return info.value


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, dict(max_new_tokens=DEFAULT_MAX, temperature=1.0, top_p=1.0, top_k=0, stop=(), seed=None, stream=False)),
        ({"max_tokens": 7}, dict(max_new_tokens=7)),
        ({"temperature": 0}, dict(temperature=0.0)),
        ({"temperature": 0.7, "top_p": 0.9, "top_k": 40}, dict(temperature=0.7, top_p=0.9, top_k=40)),
        ({"stop": "\n"}, dict(stop=("\n",))),
        ({"stop": ["a", "b"]}, dict(stop=("a", "b"))),
        ({"stop": None}, dict(stop=())),
        ({"seed": 5}, dict(seed=5)),
        ({"n": 1}, dict()),
        ({"ignore_eos": True}, dict(ignore_eos=True)),
        ({"stream": True}, dict(stream=True, include_usage=False)),
        ({"stream": True, "stream_options": {"include_usage": True}}, dict(stream=True, include_usage=True)),
        ({"user": "u-1"}, dict(user="u-1")),
    ],
)
def test_mapped_fields(fields, expected):
    for gen in (completion(**fields), chat(**fields)):
        for name, value in expected.items():
            assert getattr(gen, name) == value, name


def test_completion_prompt_and_chat_messages():
    assert completion().prompt == "hi" and completion().messages is None
    assert completion(prompt=["one prompt"]).prompt == "one prompt"
    gen = parse_chat(
        {"model": "m", "messages": [
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": "c"},
        ]},
        DEFAULT_MAX,
    )
    assert gen.prompt is None and gen.is_chat
    assert gen.messages == ({"role": "system", "content": "be brief"}, {"role": "user", "content": "ab"},
                            {"role": "assistant", "content": "c"})
    assert chat(max_tokens=3, max_completion_tokens=5).max_new_tokens == 5


@pytest.mark.parametrize("name", sorted(DEFAULT_ONLY))
def test_default_only_fields_are_accepted_at_their_no_op_values_and_refused_otherwise(name):
    for ok in DEFAULT_ONLY[name]:
        chat(**{name: ok})
    not_default = {"logprobs": True, "top_logprobs": 3, "echo": True, "best_of": 2, "suffix": "x",
                   "presence_penalty": 0.5, "frequency_penalty": 1, "logit_bias": {"5": 1},
                   "tools": [{"type": "function"}], "tool_choice": "auto", "functions": [{"name": "f"}],
                   "function_call": "auto", "parallel_tool_calls": True, "response_format": {"type": "json_object"},
                   "store": True, "metadata": {"a": "b"}, "service_tier": "flex"}[name]
    error = refusal(chat, **{name: not_default})
    assert error.param == name and error.code == "unsupported_parameter"


def test_zero_float_penalty_is_the_default_but_false_is_not_zero():
    chat(presence_penalty=0.0)
    refusal(chat, best_of=True)


@pytest.mark.parametrize(
    ("parse", "fields", "param"),
    [
        (completion, {"n": 2}, "n"),
        (completion, {"prompt": ["a", "b"]}, "prompt"),
        (completion, {"prompt": [1, 2, 3]}, "prompt"),
        (completion, {"model": ""}, "model"),
        (completion, {"max_completion_tokens": 5}, "max_completion_tokens"),  # a chat field
        (completion, {"messages": []}, "messages"),
        (chat, {"prompt": "x"}, "prompt"),
        (chat, {"frobnicate": 1}, "frobnicate"),
        (chat, {"messages": []}, "messages"),
        (chat, {"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        (chat, {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, "messages[0].content"),
        (chat, {"messages": [{"role": "user", "content": "x", "tool_calls": []}]}, "messages[0].tool_calls"),
        (chat, {"temperature": "hot"}, "temperature"),
        (chat, {"max_tokens": True}, "max_tokens"),
        (chat, {"stop": [1]}, "stop"),
        (chat, {"stream_options": {"include_usage": True}}, "stream_options"),  # without stream
        (chat, {"stream": True, "stream_options": {"continuous_usage_stats": True}}, "stream_options"),
    ],
)
def test_refused(parse, fields, param):
    assert refusal(parse, **fields).param == param


def test_the_field_tables_do_not_overlap():
    assert not set(COMPLETION_FIELDS) & set(DEFAULT_ONLY)
    assert not set(CHAT_FIELDS) & set(DEFAULT_ONLY)
    assert set(CHAT_FIELDS) - set(COMPLETION_FIELDS) == {"messages", "max_completion_tokens"}
