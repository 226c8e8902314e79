"""Inference requests as a client publishes them: built, addressed to its reply partition, keyed.

Every request a client sends carries a fresh secret `reply_token` (the service echoes it in each
answer record; see streamer.replies) and is validated here the way the service will decode it,
so a request the service would refuse fails at the caller, with the reason.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import TypedDict

import msgspec

from schemas import ChatMessage, InferenceRequest, ReplyAddress, SamplingParams, decode_request, encode
from streamer.routing import RouteTable

BASE_MODEL_KEY = "__base__"  # partition key of requests for the base model
_REPLY_TOKEN_BYTES = 16  # 128 random bits, 22 urlsafe characters


ChatMessages = Iterable[ChatMessage | Mapping[str, str]]  # {"role": ..., "content": ...} or ChatMessage


class RequestOptions(TypedDict, total=False):
    """What a request may set besides prompt and adapter (see `LoraClient.build_request`)."""

    messages: ChatMessages | None
    ignore_eos: bool
    max_new_tokens: int
    temperature: float
    top_p: float
    top_k: int
    stop: Iterable[str]
    seed: int | None
    deadline_s: float | None
    priority: int
    request_id: str | None
    base: str | None


def new_inference_request(
    reply_to: ReplyAddress,
    prompt: str | None,
    adapter_id: str | None,
    *,
    messages: ChatMessages | None,
    ignore_eos: bool,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    top_k: int,
    stop: Iterable[str],
    seed: int | None,
    deadline_s: float | None,
    priority: int,
    request_id: str | None,
    stream: bool,
    base: str | None = None,
) -> InferenceRequest:
    """A request answered to `reply_to`, with a fresh reply_token; the defaults are LoraClient's.

    Raises ValueError unless exactly one of a non-empty prompt and non-empty messages is given.
    """
    params = SamplingParams(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        stop=list(stop),
        seed=seed,
        ignore_eos=ignore_eos,
    )
    created_ms = now_ms()
    return InferenceRequest(
        request_id=request_id or uuid.uuid4().hex,
        prompt=prompt or "",
        messages=chat_messages(messages),
        adapter_id=adapter_id,
        params=params,
        reply_to=reply_to,
        deadline_ms=None if deadline_s is None else created_ms + round(deadline_s * 1000),
        priority=priority,
        created_ms=created_ms,
        stream=stream,
        batch_chunks=True,  # the reply reader unpacks ChunkBatch records
        reply_token=new_reply_token(),
        base=base,
    )


def chat_messages(messages: ChatMessages | None) -> list[ChatMessage] | None:
    """ChatMessages of ChatMessage objects or {"role", "content"} mappings (other keys ignored)."""
    if messages is None:
        return None
    turns = []
    for message in messages:
        if isinstance(message, ChatMessage):
            turns.append(message)
        elif isinstance(message, Mapping) and "role" in message and "content" in message:
            turns.append(ChatMessage(role=message["role"], content=message["content"]))
        else:
            raise ValueError(f"a chat message is a ChatMessage or a mapping with role and content, not {message!r}")
    return turns


def addressed_to(request: InferenceRequest, reply_to: ReplyAddress) -> InferenceRequest:
    """The request answered to `reply_to`, with a reply_token added when it has none.

    Raises InvalidEvent when the service would refuse it.
    """
    request = msgspec.structs.replace(
        request, reply_to=reply_to, reply_token=request.reply_token or new_reply_token()
    )
    decode_request(encode(request))
    return request


def publishable(
    request: InferenceRequest, partition_key: str | None, routes: RouteTable | None = None, lane: str | None = None
) -> tuple[bytes, bytes, int | None]:
    """(key, value, partition) of the record to publish: stamped with created_ms when unset, validated.

    The key is `partition_key`, else the adapter_id (`__base__` for the base model), so one
    adapter's traffic lands on one consumer. With `routes` (measured traffic, streamer.routing)
    a hot adapter's request gets an explicit partition (from the reports of the consumers of `lane`,
    a base's request topic; None: the default requests topic); None: Kafka partitions by the key.
    Raises InvalidEvent when the service would refuse it.
    """
    if request.created_ms == 0:
        request = msgspec.structs.replace(request, created_ms=now_ms())
    value = encode(request)
    decode_request(value)  # the service would refuse it: refuse it here, with the reason
    key = partition_key or request.adapter_id or BASE_MODEL_KEY
    routed = routes is not None and not partition_key
    partition = routes.partition_for(key, request.request_id, now_ms(), lane) if routed else None
    return key.encode(), value, partition


def new_reply_token() -> str:
    """A fresh secret for one request's answer records (see streamer.replies)."""
    return secrets.token_urlsafe(_REPLY_TOKEN_BYTES)


def now_ms() -> int:
    return time.time_ns() // 1_000_000
