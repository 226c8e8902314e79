"""OpenAI request bodies → what the gateway asks the service for, refusing what it cannot honour.

Every field of a body is either mapped (FIELDS), accepted only at the value that changes nothing
(DEFAULT_ONLY: `logprobs: false`, `n: 1`, `presence_penalty: 0`, ...), or refused with a 400 that
names it: a field is never silently ignored, so a client never gets an answer to a request other
than the one it sent. `user` (OpenAI's end-user id for abuse monitoring) is accepted and logged.
Ranges (temperature, top_p, stop strings, prompt size) are the wire format's: a request the
service would refuse fails as a 400 when the client validates it (streamer.request_builder).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.errors import invalid, unsupported

# field → (what it becomes, in docs/gateway.md's words); both endpoints
COMMON_FIELDS = {
    "model": "the base (its served name or `base`) or an adapter id",
    "max_tokens": "max_new_tokens",
    "temperature": "temperature (0 = greedy)",
    "top_p": "top_p",
    "top_k": "top_k (an extension, as vLLM's)",
    "ignore_eos": "ignore_eos (an extension, as vLLM's): generate max_tokens whatever the model says",
    "stop": "stop strings",
    "seed": "seed",
    "n": "only 1",
    "stream": "Server-Sent Events",
    "stream_options": "include_usage: a last chunk with usage",
    "user": "logged with the tenant, no effect on the answer",
}
COMPLETION_FIELDS = {**COMMON_FIELDS, "prompt": "the prompt (one string)"}
CHAT_FIELDS = {
    **COMMON_FIELDS,
    "messages": "messages, rendered by the served model's chat template",
    "max_completion_tokens": "max_new_tokens (wins over max_tokens)",
}
# field → the values that change nothing (accepted); any other value is refused
DEFAULT_ONLY: dict[str, tuple[Any, ...]] = {
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "echo": (None, False),
    "best_of": (None, 1),
    "suffix": (None, ""),
    "presence_penalty": (None, 0),
    "frequency_penalty": (None, 0),
    "logit_bias": (None, {}),
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "functions": (None, []),
    "function_call": (None, "none"),
    "parallel_tool_calls": (None,),
    "response_format": (None, {"type": "text"}),
    "store": (None, False),
    "metadata": (None, {}),
    "service_tier": (None, "auto", "default"),
}
MESSAGE_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


@dataclass(frozen=True)
class Generation:
    """One HTTP request as the service will see it (the model is resolved separately)."""

    model: str
    prompt: str | None  # /v1/completions
    messages: tuple[dict[str, str], ...] | None  # /v1/chat/completions
    max_new_tokens: int
    temperature: float = 1.0  # OpenAI's default: a request without it samples
    top_p: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False
    stream: bool = False
    include_usage: bool = False
    user: str | None = None

    @property
    def is_chat(self) -> bool:
        return self.messages is not None


def parse_completion(body: Any, default_max_tokens: int) -> Generation:
    fields = _checked_fields(body, COMPLETION_FIELDS)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if isinstance(prompt, list):
        raise unsupported("prompt", "must be one string: batches of prompts are not supported")
    if not isinstance(prompt, str):
        raise invalid("`prompt` must be a string (token ids are not supported)", "prompt")
    return _generation(fields, default_max_tokens, prompt=prompt, messages=None)


def parse_chat(body: Any, default_max_tokens: int) -> Generation:
    fields = _checked_fields(body, CHAT_FIELDS)
    messages = fields.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("`messages` must be a non-empty list", "messages")
    parsed = tuple(_message(m, i) for i, m in enumerate(messages))
    if fields.get("max_completion_tokens") is not None:
        fields = {**fields, "max_tokens": fields["max_completion_tokens"]}
    return _generation(fields, default_max_tokens, prompt=None, messages=parsed)


def _checked_fields(body: Any, allowed: dict[str, str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    for name, value in body.items():
        if name in allowed:
            continue
        if name in DEFAULT_ONLY:
            if not any(_same(value, ok) for ok in DEFAULT_ONLY[name]):
                raise unsupported(name)
            continue
        raise invalid(f"Unrecognized request argument supplied: {name}", name, "unsupported_parameter")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise invalid("`model` must be a non-empty string", "model")
    n = body.get("n")
    if n is not None and n != 1:
        raise unsupported("n", "must be 1: one choice per request")
    return body


def _generation(fields: dict[str, Any], default_max_tokens: int, **text: Any) -> Generation:
    stream = _typed(fields, "stream", bool, False)
    options = fields.get("stream_options")
    if options is not None:
        if not stream:
            raise invalid("`stream_options` is only allowed when `stream` is true", "stream_options")
        if not isinstance(options, dict) or set(options) - {"include_usage"}:
            raise unsupported("stream_options", "supports only include_usage")
    stop = fields.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise invalid("`stop` must be a string or a list of strings", "stop")
    user = _typed(fields, "user", str, None)
    return Generation(
        model=fields["model"],
        max_new_tokens=_typed(fields, "max_tokens", int, default_max_tokens),
        temperature=float(_typed(fields, "temperature", (int, float), 1.0)),
        top_p=float(_typed(fields, "top_p", (int, float), 1.0)),
        top_k=_typed(fields, "top_k", int, 0),
        stop=tuple(stop or ()),
        seed=_typed(fields, "seed", int, None),
        ignore_eos=_typed(fields, "ignore_eos", bool, False),
        stream=stream,
        include_usage=bool(_typed(options or {}, "include_usage", bool, False)),
        user=user,
        **text,
    )


def _same(value: Any, default: Any) -> bool:
    """`value` is `default` as JSON means it (0 == 0.0, but false is not 0)."""
    return value == default and isinstance(value, bool) == isinstance(default, bool)


def _typed(fields: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = fields.get(name)
    if value is None:
        return default
    if isinstance(value, bool) and kind is not bool:  # JSON true is not a number here
        raise invalid(f"`{name}` has the wrong type", name)
    if not isinstance(value, kind):
        raise invalid(f"`{name}` has the wrong type", name)
    return value


def _message(message: Any, index: int) -> dict[str, str]:
    param = f"messages[{index}]"
    if not isinstance(message, dict):
        raise invalid(f"`{param}` must be an object", param)
    extra = set(message) - {"role", "content", "name"}
    if extra:
        raise unsupported(f"{param}.{sorted(extra)[0]}")
    if message.get("name") is not None:
        raise unsupported(f"{param}.name")
    role = MESSAGE_ROLES.get(message.get("role"))
    if role is None:
        raise unsupported(f"{param}.role", f"must be one of {sorted(MESSAGE_ROLES)}")
    return {"role": role, "content": _content(message.get("content"), param)}


def _content(content: Any, param: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise unsupported(f"{param}.content", "supports only text parts")
            texts.append(part["text"])
        return "".join(texts)
    raise invalid(f"`{param}.content` must be a string or a list of text parts", f"{param}.content")
