"""Chat requests and ignore_eos at decode: exactly one of prompt and messages, roles and sizes bounded."""

from __future__ import annotations

import msgspec
import pytest

import schemas
from schemas import ChatMessage, ErrorCode, InvalidEvent
from schemas.limits import MAX_CHAT_MESSAGES, MAX_PROMPT_BYTES, MAX_ROLE_CHARS
from tests.schemas.extreme_fields import CHAT_REQUEST


def _request(**fields) -> bytes:
    return msgspec.json.encode({"kind": "request", "request_id": "r-1", **fields})


def _turns(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in pairs]


USER_HI = _turns(("user", "hi"))


@pytest.mark.parametrize(
    ("label", "fields", "expected"),
    [
        ("prompt only", {"prompt": "hello"}, ("hello", None)),
        ("messages only", {"messages": USER_HI}, ("", [ChatMessage("user", "hi")])),
        ("messages, empty prompt", {"prompt": "", "messages": USER_HI}, ("", [ChatMessage("user", "hi")])),
        ("prompt, null messages", {"prompt": "x", "messages": None}, ("x", None)),
        ("prompt, empty messages", {"prompt": "x", "messages": []}, ("x", [])),
        (
            "system, user, assistant, tool",
            {"messages": _turns(("system", "s"), ("user", "u"), ("assistant", "a"), ("tool", "t"))},
            ("", [ChatMessage(r, r[0]) for r in ("system", "user", "assistant", "tool")]),
        ),
        ("empty content", {"messages": _turns(("user", ""))}, ("", [ChatMessage("user", "")])),
        ("role of 32 characters", {"messages": _turns(("r" * MAX_ROLE_CHARS, "x"))}, ("", [ChatMessage("r" * 32, "x")])),
        ("most messages", {"messages": _turns(*[("user", "x")] * MAX_CHAT_MESSAGES)}, ("", [ChatMessage("user", "x")] * 256)),
        (
            "contents at the byte limit",
            {"messages": _turns(("system", "é" * (MAX_PROMPT_BYTES // 4)), ("user", "é" * (MAX_PROMPT_BYTES // 4)))},
            ("", [ChatMessage("system", "é" * 16384), ChatMessage("user", "é" * 16384)]),
        ),
    ],
)
def test_valid_requests_decode(label, fields, expected):
    request = schemas.decode_request(_request(**fields))
    assert (request.prompt, request.messages) == expected


@pytest.mark.parametrize(
    ("label", "fields"),
    [
        ("neither", {}),
        ("empty prompt", {"prompt": ""}),
        ("empty prompt and messages", {"prompt": "", "messages": []}),
        ("null messages only", {"messages": None}),
        ("both", {"prompt": "hello", "messages": USER_HI}),
        ("too many messages", {"messages": _turns(*[("user", "x")] * (MAX_CHAT_MESSAGES + 1))}),
        ("contents over the byte limit", {"messages": _turns(("user", "é" * (MAX_PROMPT_BYTES // 4)), ("user", "é" * (MAX_PROMPT_BYTES // 4 + 1)))}),
        ("one content over the character limit", {"messages": _turns(("user", "x" * (MAX_PROMPT_BYTES + 1)))}),
        ("empty role", {"messages": _turns(("", "x"))}),
        ("role of 33 characters", {"messages": _turns(("r" * (MAX_ROLE_CHARS + 1), "x"))}),
        ("role with a space", {"messages": _turns(("the user", "x"))}),
        ("role with a newline", {"messages": _turns(("user\n", "x"))}),
        ("no role", {"messages": [{"content": "x"}]}),
        ("no content", {"messages": [{"role": "user"}]}),
        ("content not a string", {"messages": [{"role": "user", "content": ["x"]}]}),
        ("messages not a list", {"messages": {"role": "user", "content": "x"}}),
        ("ignore_eos not a bool", {"prompt": "x", "params": {"ignore_eos": "yes"}}),
        ("ignore_eos an int", {"prompt": "x", "params": {"ignore_eos": 1}}),
    ],
)
def test_invalid_requests_are_refused_with_their_id(label, fields):
    with pytest.raises(InvalidEvent) as info:
        schemas.decode_request(_request(**fields))
    assert info.value.code is ErrorCode.INVALID_REQUEST and info.value.message
    assert info.value.request_id == "r-1"


def test_ignore_eos_defaults_off_and_round_trips():
    assert schemas.decode_request(_request(prompt="x")).params.ignore_eos is False
    request = schemas.decode_request(_request(prompt="x", params={"ignore_eos": True, "max_new_tokens": 5}))
    assert request.params.ignore_eos is True
    assert schemas.decode_request(schemas.encode(request)) == request


def test_the_chat_body_of_the_extreme_cases_decodes():
    request = schemas.decode_request(msgspec.json.encode(CHAT_REQUEST))
    assert request.prompt == "" and [m.role for m in request.messages] == ["system", "user"]
    assert schemas.decode_request(schemas.encode(request)) == request


@pytest.mark.parametrize(
    "fields",
    [{}, {"prompt": "x", "messages": [ChatMessage("user", "y")]}, {"prompt": "", "messages": []}],
    ids=["neither", "both", "both-empty"],
)
def test_constructing_a_request_checks_it_too(fields):
    with pytest.raises(ValueError, match="exactly one"):
        schemas.InferenceRequest(request_id="r-1", **fields)
