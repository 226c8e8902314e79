"""The tables that turn wire errors into HTTP answers and Final records into OpenAI bodies."""

from __future__ import annotations

import pytest

from gateway.errors import UNKNOWN_WIRE_ERROR_STATUS, WIRE_ERROR_STATUS, ApiError, from_wire_error
from gateway.requests import parse_chat, parse_completion
from gateway.responses import DONE, FINISH_REASONS, ChunkWriter, final_body
from schemas import ErrorCode, Final, FinishReason, Usage


def test_every_wire_error_code_has_a_status():
    assert {code.value for code in ErrorCode} <= set(WIRE_ERROR_STATUS)


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("adapter_not_found", 404, "invalid_request_error"),
        ("invalid_request", 400, "invalid_request_error"),
        ("prompt_too_long", 400, "invalid_request_error"),
        ("chat_template_missing", 400, "invalid_request_error"),
        ("overloaded", 503, "server_error"),
        ("adapter_unavailable", 503, "server_error"),
        ("expired", 504, "timeout"),
        ("adapter_corrupt", 500, "server_error"),
        ("reply_not_authorized", 502, "server_error"),
        ("internal", 500, "server_error"),
        ("a_code_added_later", UNKNOWN_WIRE_ERROR_STATUS, "server_error"),
    ],
)
def test_wire_errors_map_to_status_and_openai_body(code, status, kind):
    error = from_wire_error(code, "why")
    assert error.status == status
    assert error.body() == {"error": {"message": "why", "type": kind, "param": None, "code": code}}


def test_api_error_is_a_project_exception():
    from lorastream.errors import LorastreamError

    assert isinstance(ApiError(400, "m", "c"), LorastreamError)


def test_every_finish_reason_is_mapped():
    assert set(FINISH_REASONS) == set(FinishReason)
    assert FINISH_REASONS[FinishReason.EOS] == FINISH_REASONS[FinishReason.STOP] == "stop"
    assert FINISH_REASONS[FinishReason.LENGTH] == "length"


FINAL = Final("r1", 0, 2, FinishReason.EOS, "Hello world", usage=Usage(prompt_tokens=3, completion_tokens=2))


def test_non_streaming_bodies():
    completion = final_body(parse_completion({"model": "acme/x", "prompt": "p"}, 8), "r1", FINAL)
    assert completion["object"] == "text_completion" and completion["id"] == "cmpl-r1"
    assert completion["model"] == "acme/x"
    assert completion["choices"] == [{"index": 0, "text": "Hello world", "finish_reason": "stop", "logprobs": None}]
    assert completion["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    chat = final_body(parse_chat({"model": "m", "messages": [{"role": "user", "content": "p"}]}, 8), "r1", FINAL)
    assert chat["object"] == "chat.completion" and chat["id"] == "chatcmpl-r1"
    assert chat["choices"][0]["message"] == {"role": "assistant", "content": "Hello world"}


def test_a_chat_stream_opens_with_the_role_and_ends_with_usage_then_done():
    import orjson

    gen = parse_chat({"model": "m", "messages": [{"role": "user", "content": "p"}], "stream": True,
                      "stream_options": {"include_usage": True}}, 8)
    writer = ChunkWriter(gen, "r1")
    events = [*writer.opening(), writer.text("Hello"), writer.text(" world"), *writer.closing(FINAL)]
    assert events[-1] == DONE
    bodies = [orjson.loads(e.removeprefix(b"data: ")) for e in events[:-1]]
    assert all(e.endswith(b"\n\n") and e.startswith(b"data: ") for e in events)
    assert [b["choices"][0]["delta"] for b in bodies[:4]] == [{"role": "assistant", "content": ""}, {"content": "Hello"},
                                                              {"content": " world"}, {}]
    assert [b["choices"][0]["finish_reason"] for b in bodies[:4]] == [None, None, None, "stop"]
    assert bodies[4]["choices"] == [] and bodies[4]["usage"]["total_tokens"] == 5
    assert all(b["usage"] is None for b in bodies[:4])
    assert {b["object"] for b in bodies} == {"chat.completion.chunk"} and {b["id"] for b in bodies} == {"chatcmpl-r1"}


def test_a_completion_stream_has_no_usage_unless_asked():
    import orjson

    writer = ChunkWriter(parse_completion({"model": "m", "prompt": "p", "stream": True}, 8), "r1")
    events = [*writer.opening(), writer.text("Hi"), *writer.closing(FINAL)]
    bodies = [orjson.loads(e.removeprefix(b"data: ")) for e in events[:-1]]
    assert [b["choices"][0]["text"] for b in bodies] == ["Hi", ""]
    assert bodies[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in b for b in bodies) and events[-1] == DONE
