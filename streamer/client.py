"""LoraClient: publish inference requests, stream their answers back from a reply partition.

Replies come to one partition this client reads alone, with manual `assign` (no consumer group,
so no rebalances): by default a private topic `<prefix>.replies.<client_id>` created on enter
and deleted on exit, or a partition of a shared reply topic that the deployment assigns to this
client. One reader task demultiplexes records by request_id (see streamer.replies); every request
gets a fresh secret `reply_token`, and records that do not carry it are dropped as forged.

This module is the API; what the client holds open (producer, reply reader, private reply topic,
cancels in flight) is streamer.client_connection, and how a request is built, addressed and keyed
is streamer.request_builder.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import uuid
from collections.abc import Iterable
from typing import Self, Unpack

import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from schemas import ErrorCode, Final, InferenceRequest, ReplyAddress, SamplingParams
from schemas.limits import TOPIC_PATTERN
from streamer.catalogue import BaseListing
from streamer.client_connection import ClientConnection
from streamer.config import KafkaConfig, TopicNames
from streamer.errors import ClientClosed, PublishFailed, RequestFailed
from streamer.model_listing import AdapterListing, list_adapters, list_bases
from streamer.replies import Sink
from streamer.request_builder import (
    BASE_MODEL_KEY,
    ChatMessages,
    RequestOptions,
    addressed_to,
    new_inference_request,
    new_reply_token,
    now_ms,
    publishable,
)
from streamer.stream import RequestStream
from streamer.training_client import TrainingJob, build_training_request, submit_training

__all__ = ["BASE_MODEL_KEY", "DEFAULT_REQUEST_TIMEOUT_S", "ChatMessages", "LoraClient", "RequestOptions", "new_reply_token"]

_TOPIC_RE = re.compile(TOPIC_PATTERN)
_NOT_STARTED = "the client is not started (use `async with LoraClient(...)`)"
_SAMPLING = SamplingParams()  # the defaults of every sampling argument below (the wire format's)
DEFAULT_REQUEST_TIMEOUT_S = 120.0  # how long a stream waits for its answer unless told otherwise


class LoraClient:
    """Async client of the lorastream inference service; use as `async with`."""

    def __init__(
        self,
        bootstrap_servers: str | None = None,
        *,
        config: KafkaConfig | None = None,
        topics: TopicNames | None = None,
        client_id: str | None = None,
        reply_topic: str | None = None,
        reply_partition: int | None = None,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
    ) -> None:
        if config is None:
            config = KafkaConfig.from_env(bootstrap_servers)
        elif bootstrap_servers is not None:
            config = dataclasses.replace(config, bootstrap_servers=bootstrap_servers)
        if (reply_topic is None) != (reply_partition is None):
            raise ValueError("give reply_topic and reply_partition together (or neither)")
        if reply_partition is not None and reply_partition < 0:
            raise ValueError("reply_partition must be >= 0")
        if reply_topic is not None and not _TOPIC_RE.match(reply_topic):
            raise ValueError(f"invalid reply_topic {reply_topic!r}")
        if request_timeout_s <= 0:
            raise ValueError("request_timeout_s must be > 0")
        self.config = config
        self.topics = topics = topics or TopicNames()
        self.client_id = client_id or uuid.uuid4().hex[:16]
        self.request_timeout_s = request_timeout_s
        self.owns_reply_topic = reply_topic is None
        self.reply_to = ReplyAddress(
            topic=reply_topic or topics.replies_for(self.client_id),
            partition=reply_partition or 0,
        )
        self._connection = ClientConnection(
            self.config, self.reply_to, owns_reply_topic=self.owns_reply_topic, control_topic=topics.control,
            stats_topic=topics.adapter_stats, catalogue_topic=topics.catalogue,
        )
        self._reader = self._connection.reader
        self._loop: asyncio.AbstractEventLoop | None = None
        self._is_open = False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect, create the private reply topic if any, and start reading replies."""
        if self._is_open:
            return
        self._loop = asyncio.get_running_loop()
        await self._connection.start()
        self._is_open = True

    async def close(self) -> None:
        """Fail unfinished streams with ClientClosed, send pending cancels, disconnect."""
        if not self._is_open:
            return
        self._is_open = False
        self._reader.fail_all(ClientClosed("the client was closed"))
        await self._connection.stop()

    @property
    def num_waiting(self) -> int:
        """Requests whose answer is still awaited."""
        return len(self._reader.demux)

    @property
    def num_dropped_records(self) -> int:
        """Reply records dropped as duplicates or superseded attempts."""
        return self._reader.demux.num_dropped

    @property
    def num_ignored_records(self) -> int:
        """Reply records for requests nobody waits for (finished, abandoned, other clients')."""
        return self._reader.demux.num_ignored

    @property
    def num_forged_records(self) -> int:
        """Reply records for a waiting request that lack its reply_token (dropped)."""
        return self._reader.demux.num_forged

    def stream(
        self,
        prompt: str | None = None,
        adapter_id: str | None = None,
        *,
        messages: ChatMessages | None = None,
        ignore_eos: bool = _SAMPLING.ignore_eos,
        max_new_tokens: int = _SAMPLING.max_new_tokens,
        temperature: float = _SAMPLING.temperature,
        top_p: float = _SAMPLING.top_p,
        top_k: int = _SAMPLING.top_k,
        stop: Iterable[str] = (),
        seed: int | None = None,
        deadline_s: float | None = None,
        priority: int = 0,
        request_id: str | None = None,
        timeout_s: float | None = None,
        partition_key: str | None = None,
        base: str | None = None,
    ) -> RequestStream:
        """`async for record in client.stream(...)`: TokenChunks, then the Final.

        Give a `prompt` (completed as it is) or chat `messages` ({"role", "content"} mappings or
        ChatMessage; the service renders them with the model's chat template), not both: ValueError.
        `ignore_eos` keeps generating past the model's end-of-sequence tokens (fixed-length answers).
        `base` names the base model (None: the deployment's default): the request goes to the topic
        a live consumer of that base announced in the catalogue; when none has, RequestFailed with
        code `base_not_served` is raised at once.
        """
        request = self.build_request(
            prompt,
            adapter_id,
            messages=messages,
            ignore_eos=ignore_eos,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            stop=stop,
            seed=seed,
            deadline_s=deadline_s,
            priority=priority,
            request_id=request_id,
            base=base,
        )
        return self.stream_request(request, timeout_s=timeout_s, partition_key=partition_key)

    async def train(
        self,
        adapter_id: str,
        dataset: str,
        *,
        job_id: str | None = None,
        base_model: str | None = None,
        overwrite: bool = False,
        **hyperparameters: object,
    ) -> TrainingJob:
        """Publish a TrainingRequest; `async for event in job.events()` follows it to the end."""
        producer = self._open_producer()
        request = build_training_request(
            adapter_id, dataset, job_id=job_id, base_model=base_model, overwrite=overwrite,
            **hyperparameters,
        )
        return await submit_training(self.config, self.topics, request, producer=producer)

    async def generate(
        self,
        prompt: str | None = None,
        adapter_id: str | None = None,
        *,
        messages: ChatMessages | None = None,
        ignore_eos: bool = _SAMPLING.ignore_eos,
        max_new_tokens: int = _SAMPLING.max_new_tokens,
        temperature: float = _SAMPLING.temperature,
        top_p: float = _SAMPLING.top_p,
        top_k: int = _SAMPLING.top_k,
        stop: Iterable[str] = (),
        seed: int | None = None,
        deadline_s: float | None = None,
        priority: int = 0,
        request_id: str | None = None,
        timeout_s: float | None = None,
        partition_key: str | None = None,
        base: str | None = None,
    ) -> Final:
        """The whole answer at once (the service sends no chunks, only the Final)."""
        request = self.build_request(
            prompt,
            adapter_id,
            messages=messages,
            ignore_eos=ignore_eos,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            stop=stop,
            seed=seed,
            deadline_s=deadline_s,
            priority=priority,
            request_id=request_id,
            stream=False,
            base=base,
        )
        async with self.stream_request(
            request, timeout_s=timeout_s, partition_key=partition_key
        ) as answer:
            return await answer.final()

    async def submit(
        self,
        prompt: str | None = None,
        adapter_id: str | None = None,
        *,
        reply_to: ReplyAddress | None = None,
        stream: bool = False,
        partition_key: str | None = None,
        **options: Unpack[RequestOptions],
    ) -> str:
        """Publish a request without waiting for its answer; return its request_id.

        The Final goes to the results topic (and to `reply_to`, when given); `options` are
        those of `stream()` that shape the request (max_new_tokens, temperature, ...).
        """
        request = self.build_request(prompt, adapter_id, stream=stream, **options)
        request = msgspec.structs.replace(request, reply_to=reply_to)
        await self.send_request(request, partition_key=partition_key)
        return request.request_id

    def stream_request(
        self,
        request: InferenceRequest,
        *,
        timeout_s: float | None = None,
        partition_key: str | None = None,
    ) -> RequestStream:
        """Stream the answer of a request built by the caller; its reply_to is set to ours, and
        a reply_token is added when it has none.

        Raises InvalidEvent at once when the service would refuse the request.
        """
        return RequestStream(
            self,
            addressed_to(request, self.reply_to),
            timeout_s=self.request_timeout_s if timeout_s is None else timeout_s,
            partition_key=partition_key,
        )

    async def send_request(
        self, request: InferenceRequest, *, partition_key: str | None = None
    ) -> None:
        """Validate and publish a request on the requests topic of its base, keyed by adapter.

        The key is `partition_key`, else the adapter_id (`__base__` for the base model), so one
        adapter's traffic lands on one consumer. Raises InvalidEvent, PublishFailed, ClientClosed,
        and RequestFailed (`base_not_served`) when no live consumer serves the request's base.
        """
        producer = self._open_producer()
        topic = await self.requests_topic(request.base, request.request_id)
        lane = None if topic == self.topics.requests else topic
        key, value, partition = publishable(request, partition_key, self._connection.routes, lane)
        try:
            await producer.send_and_wait(topic, value, key=key, partition=partition)
        except KafkaError as exc:
            raise PublishFailed(f"request {request.request_id} not published: {exc!r}") from exc

    async def models(self) -> list[BaseListing]:
        """Every base a consumer announced or an adapter names, live or not (streamer.model_listing)."""
        self._open_producer()  # raises ClientClosed unless started
        registry = await self._connection.registry(self.topics.adapters)
        return list_bases(self._connection.catalogue, registry, now_ms())

    async def adapters(self, base: str | None = None) -> list[AdapterListing]:
        """The registered adapters (of `base`, when given), live or not, with their tier where known."""
        self._open_producer()
        registry = await self._connection.registry(self.topics.adapters)
        return list_adapters(self._connection.catalogue, registry, self.topics.requests, now_ms(), base)

    async def requests_topic(self, base: str | None, request_id: str = "-") -> str:
        """Where a request for `base` goes: the default requests topic for None, else the topic a
        live consumer of `base` reads (streamer.catalogue). Raises RequestFailed (`base_not_served`)."""
        if base is None:
            return self.topics.requests
        topic = await self._connection.lane(base)
        if topic is None:
            raise RequestFailed(request_id, ErrorCode.BASE_NOT_SERVED, f"no live consumer serves base {base!r}")
        return topic

    def build_request(
        self,
        prompt: str | None = None,
        adapter_id: str | None = None,
        *,
        messages: ChatMessages | None = None,
        ignore_eos: bool = _SAMPLING.ignore_eos,
        max_new_tokens: int = _SAMPLING.max_new_tokens,
        temperature: float = _SAMPLING.temperature,
        top_p: float = _SAMPLING.top_p,
        top_k: int = _SAMPLING.top_k,
        stop: Iterable[str] = (),
        seed: int | None = None,
        deadline_s: float | None = None,
        priority: int = 0,
        request_id: str | None = None,
        stream: bool = True,
        base: str | None = None,
    ) -> InferenceRequest:
        """An InferenceRequest answered to this client's reply address; `base` None: the default base."""
        return new_inference_request(
            self.reply_to,
            prompt,
            adapter_id,
            messages=messages,
            ignore_eos=ignore_eos,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            stop=stop,
            seed=seed,
            deadline_s=deadline_s,
            priority=priority,
            request_id=request_id,
            stream=stream,
            base=base,
        )

    def _open_producer(self) -> AIOKafkaProducer:
        producer = self._connection.producer
        if not self._is_open or producer is None:
            raise ClientClosed(_NOT_STARTED)
        return producer

    # --- used by RequestStream -------------------------------------------------------------

    def _register(self, request: InferenceRequest, sink: Sink) -> None:
        if not self._is_open:
            raise ClientClosed(_NOT_STARTED)
        self._reader.demux.register(request.request_id, request.reply_token, sink)

    def _forget(self, request_id: str) -> bool:
        """Stop routing replies to a request; True when it was still waiting (cancel it)."""
        return self._reader.demux.unregister(request_id) and self._is_open

    def _abandon_soon(self, request_id: str) -> None:
        """From a finalizer: forget and cancel the request on the event loop's thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._abandon, request_id)

    def _abandon(self, request_id: str) -> None:
        if self._forget(request_id):
            self._cancel_in_background(request_id)

    def _cancel_in_background(self, request_id: str) -> None:
        self._connection.cancel_in_background(request_id)

    async def _publish_cancel(self, request_id: str) -> None:
        await self._connection.publish_cancel(request_id)
