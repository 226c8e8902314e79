"""The inference consumer: Kafka requests in, engine work off the event loop, answers out.

Flow per record: decode/validate → check the reply address (pattern, existence) → admit (an
`Answer`) → the engine thread generates → events come back to the loop through
`call_soon_threadsafe` → the `AnswerWriter` sends chunks, the last record and the results copy
through the per-destination outbox → the offset becomes committable once the results copy (or,
for a refused record, its dead letter) is acknowledged and every lower offset of its partition is
finished too. Any exception between fetch and answer becomes a typed Error plus a dead letter.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from aiokafka import ConsumerRebalanceListener, TopicPartition

from consumers.inference.answer import Answer, derived_seed
from consumers.inference.answer_writer import AnswerWriter
from consumers.inference.cache_metrics import CacheCollector
from streamer.commit_watchdog import CommitWatchdog
from consumers.config import ServeConfig
from streamer.control import ControlListener
from streamer.epochs import PartitionEpochs
from consumers.inference.error_map import wire_code
from consumers.metrics import HealthServer, Metrics
from streamer.outbox import Outbox
from consumers.inference.registry import AdapterRegistryListener
from streamer.reply_topics import ReplyPolicy, ReplyTopicDirectory
from gpu_engine.types import FinishReason as EngineFinish
from gpu_engine.types import GenerationEvent, GenerationRequest
from gpu_engine.types import SamplingParams as EngineSampling
from schemas import (
    ErrorCode,
    FinishReason,
    InferenceRequest,
    InvalidEvent,
    ReplyAddress,
    decode_request,
    encode,
)
from streamer import (
    KafkaConfig,
    OffsetTracker,
    TopicNames,
    default_topic_specs,
    ensure_topics,
    make_consumer,
    make_producer,
)
from streamer.admin import admin_client

log = logging.getLogger(__name__)


class Runner(Protocol):
    """What the service needs of the engine (gpu_engine.runner.EngineRunner fits).

    Optional: `register_adapter(ref)` / `retire_adapter(id)` (the adapters topic is followed only
    when present) and `cache_stats` (a gpu_engine.cache_stats.CacheStats, exported to /metrics).
    """

    def start(self) -> None: ...
    def submit(self, req: GenerationRequest, on_event: Callable[[GenerationEvent], None]) -> None: ...
    def abort(self, request_id: str) -> None: ...
    def stop(self, timeout_s: float = ...) -> None: ...


class InferenceService:
    def __init__(
        self, kafka: KafkaConfig, topics: TopicNames, config: ServeConfig, runner: Runner
    ) -> None:
        self.kafka = kafka
        self.topics = topics
        self.config = config
        self.runner = runner
        self.offsets: OffsetTracker[TopicPartition] = OffsetTracker()
        self.answers: dict[str, Answer] = {}
        self.ready = asyncio.Event()
        self.metrics = Metrics()
        cache_stats = getattr(runner, "cache_stats", None)
        if cache_stats is not None:
            self.metrics.registry.register(CacheCollector(cache_stats.snapshot))
        self.reply_policy = ReplyPolicy(config.reply_pattern(topics.prefix), _service_topics(topics))
        self.watchdog: CommitWatchdog[TopicPartition] = CommitWatchdog(config.commit_stall_s)
        self.stalled_partitions: list[TopicPartition] = []
        self.registry: AdapterRegistryListener | None = None
        self.health: HealthServer | None = None
        self.epochs: PartitionEpochs | None = None
        self._stopping = asyncio.Event()
        self._paused = False
        self._consumer = None
        self._outbox: Outbox | None = None
        self._writer: AnswerWriter | None = None
        self._directory: ReplyTopicDirectory | None = None
        self._lookups: set[asyncio.Task[None]] = set()  # admissions waiting for a reply-topic lookup
        self._loop: asyncio.AbstractEventLoop | None = None
        self._served_by = config.served_by

    @property
    def chunks_per_reply_record(self) -> float:
        """TokenChunks per reply record sent for requests that accept ChunkBatch records (1.0: none packed)."""
        batcher = self._writer.batcher if self._writer is not None else None
        return batcher.chunks_sent / batcher.records_sent if batcher is not None and batcher.records_sent else 1.0

    def is_ready(self) -> bool:
        """Consuming, and no partition's commit is stalled behind lag."""
        return self.ready.is_set() and not self.stalled_partitions

    def stop(self) -> None:
        """Stop intake; `run` drains in-flight requests, commits, and returns."""
        self._stopping.set()

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        specs = default_topic_specs(self.topics, request_partitions=self.config.request_partitions)
        await ensure_topics(self.kafka, specs)
        async with admin_client(self.kafka) as admin:
            self.epochs = PartitionEpochs(admin, self.config.group_id)
            self._directory = ReplyTopicDirectory(lambda topic: _describe_one(admin, topic))
            await self._run()

    async def _run(self) -> None:
        producer = make_producer(self.kafka, linger_ms=2)
        consumer = make_consumer(
            self.kafka,
            group_id=self.config.group_id,
            group_instance_id=self.config.group_instance_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        self._consumer = consumer
        control = ControlListener(self.kafka, self.topics.control, self._on_cancel)
        if hasattr(self.runner, "register_adapter"):
            self.registry = AdapterRegistryListener(self.kafka, self.topics.adapters, self.runner)
        await producer.start()
        self._outbox = Outbox(producer, self.config.send_retry)
        self._writer = AnswerWriter(
            outbox=self._outbox, loop=self._loop, topics=self.topics, config=self.config, metrics=self.metrics,
            directory=self._directory, lookup=self.answers.get, abort=self.runner.abort, settled=self._settled,
        )
        self.runner.start()
        if self.registry is not None:
            await self.registry.start()
            try:  # answer with the registered versions from the first request on
                await asyncio.wait_for(self.registry.caught_up.wait(), self.config.registry_catch_up_s)
            except TimeoutError:
                log.warning("adapters topic not replayed within %.0f s; serving meanwhile", self.config.registry_catch_up_s)
        consumer.subscribe([self.topics.requests], listener=_Rebalance(self))
        await consumer.start()
        await control.start()
        if self.config.metrics_port is not None:
            self.health = HealthServer(self.metrics, self.is_ready, self.config.metrics_host, self.config.metrics_port)
            await self.health.start()
        try:
            await self._poll_loop(consumer)
            await self._drain()
            await self._commit(consumer)
        finally:
            for task in self._lookups:
                task.cancel()
            if self.health is not None:
                await self.health.stop()
            await control.stop()
            if self.registry is not None:
                await self.registry.stop()
            await consumer.stop()
            await self._outbox.close(timeout_s=10.0)
            await producer.stop()
            self.runner.stop(timeout_s=10.0)

    async def _poll_loop(self, consumer) -> None:
        next_commit = time.monotonic()
        while not self._stopping.is_set():
            batch = await consumer.getmany(timeout_ms=20, max_records=self.config.max_fetch_records)
            self.ready.set()
            for tp, records in batch.items():
                for record in records:
                    self._admit(tp, record.offset, record.value or b"")
            self._apply_backpressure(consumer)
            if time.monotonic() >= next_commit:
                await self._commit(consumer)
                self._watch_commits(consumer)
                next_commit = time.monotonic() + self.config.commit_interval_ms / 1000.0

    async def _drain(self) -> None:
        deadline = time.monotonic() + self.config.shutdown_drain_s
        while self.answers and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for answer in list(self.answers.values()):
            self.runner.abort(answer.request_id)
        if self._outbox is not None:
            await self._outbox.close(timeout_s=5.0)

    async def _commit(self, consumer) -> None:
        offsets = self.offsets.committable()
        if not offsets:
            return
        assigned = consumer.assignment()
        offsets = {
            tp: (off, self.epochs.metadata(tp)) for tp, off in offsets.items() if tp in assigned
        }
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except Exception as exc:  # transient (rebalance in progress, broker away): next round retries
            log.warning("commit failed: %r", exc)
            return
        self.offsets.committed({tp: off for tp, (off, _) in offsets.items()})
        now_s = time.monotonic()
        for tp in offsets:
            self.watchdog.committed(tp, now_s)

    def _watch_commits(self, consumer) -> None:
        lags = {}
        for tp in consumer.assignment():
            committed = self.offsets.committed_offset(tp)
            highwater = consumer.highwater(tp)
            if committed is None or highwater is None:
                lags[tp] = self.offsets.num_open(tp)
            else:
                lags[tp] = max(highwater - committed, 0)
        self.stalled_partitions = self.watchdog.stalled(lags, time.monotonic())
        self.metrics.commit_stalled.set(len(self.stalled_partitions))
        self.metrics.outbox_lanes.set(self._outbox.num_lanes)
        self.metrics.outbox_unacked.set(self._outbox.num_unacked)

    def _apply_backpressure(self, consumer) -> None:
        inflight = len(self.answers) + len(self._lookups)
        self.metrics.inflight.set(inflight)
        if not self._paused and inflight >= self.config.max_inflight:
            consumer.pause(*consumer.assignment())
            self._paused = True
            self.metrics.paused.set(1)
        elif self._paused and inflight < self.config.resume_below:
            consumer.resume(*consumer.assignment())
            self._paused = False
            self.metrics.paused.set(0)

    # ---- admission -------------------------------------------------------------------------

    def _admit(self, tp: TopicPartition, offset: int, raw: bytes) -> None:
        """Take one record on; whatever goes wrong, it ends answered or dead-lettered."""
        self.offsets.track(tp, offset)
        answer = None
        try:
            try:
                request = decode_request(raw)
            except InvalidEvent as exc:
                self._refuse(tp, offset, raw, exc)
                return
            running = self.answers.get(request.request_id)
            if running is not None:  # the same request again while in flight: answer once
                running.extra_offsets.append((tp, offset))
                return
            attempt = request.attempt + self.epochs.epoch(tp)
            answer = Answer(
                request, raw, tp.topic, tp.partition, offset, attempt=attempt, served_by=self._served_by
            )
            self.answers[request.request_id] = answer
            self._check_reply_then_start(answer)
        except Exception as exc:
            self._internal_failure(tp, offset, raw, answer, exc)

    def _check_reply_then_start(self, answer: Answer) -> None:
        reply_to = answer.request.reply_to
        if reply_to is None:
            self._start(answer)
            return
        refusal = self.reply_policy.refusal(reply_to.topic)
        if refusal is not None:
            self._refuse_reply(answer, ErrorCode.REPLY_TOPIC_REFUSED, refusal)
            return
        status = self._directory.cached(reply_to.topic)
        if status is not None:
            self._start_if_deliverable(answer, status)
            return
        task = asyncio.ensure_future(self._lookup_then_start(answer))
        self._lookups.add(task)
        task.add_done_callback(self._lookups.discard)

    async def _lookup_then_start(self, answer: Answer) -> None:
        try:
            status = await self._directory.lookup(answer.request.reply_to.topic)
            if status is None:  # the broker could not say: try; a failed send ends the request
                self._start(answer)
            else:
                self._start_if_deliverable(answer, status)
        except Exception as exc:
            self._internal_failure(TopicPartition(answer.topic, answer.partition), answer.offset, answer.raw, answer, exc)

    def _start_if_deliverable(self, answer: Answer, status) -> None:
        refusal = status.refusal(answer.request.reply_to)
        if refusal is None:
            self._start(answer)
        else:
            self._refuse_reply(answer, *refusal)

    def _refuse_reply(self, answer: Answer, code: ErrorCode, message: str) -> None:
        """Nothing goes to this reply address: the Error is on the results topic and the dead letter."""
        answer.reply_failed = True
        self._writer.error(answer, code, message, dead_letter=True)

    def _start(self, answer: Answer) -> None:
        request = answer.request
        if request.deadline_ms is not None and request.deadline_ms <= time.time() * 1000:
            self._writer.error(answer, ErrorCode.EXPIRED, "deadline passed before it was started")
            return
        if request.deadline_ms is not None:
            delay_s = request.deadline_ms / 1000.0 - time.time()
            answer.deadline_timer = self._loop.call_later(delay_s, self._expire, answer)
        answer.submitted_s = time.monotonic()
        loop = self._loop
        self.runner.submit(
            _generation_request(request), lambda ev: loop.call_soon_threadsafe(self._on_event, answer, ev)
        )

    def _refuse(self, tp: TopicPartition, offset: int, raw: bytes, exc: InvalidEvent) -> None:
        """A record that is not a valid request: dead-letter it, tell the sender if its address is allowed."""
        if exc.request_id is not None and exc.reply_to is not None:
            attempt = exc.attempt + self.epochs.epoch(tp)
            request = InferenceRequest(
                request_id=exc.request_id, prompt="", reply_to=exc.reply_to, reply_token=exc.reply_token
            )
            answer = Answer(request, raw, tp.topic, tp.partition, offset, attempt=attempt, served_by=self._served_by)
            self._reply_refusal(exc.reply_to, encode(answer.error(exc.code, exc.message)), exc.request_id)
        self._writer.dead_letter(
            tp.topic, tp.partition, offset, raw, exc.code, exc.message, exc.request_id,
            on_acked=lambda: self.offsets.done(tp, offset),
        )

    def _reply_refusal(self, address: ReplyAddress, record: bytes, request_id: str) -> None:
        if self.reply_policy.refusal(address.topic) is not None:
            return

        async def send_when_known() -> None:
            status = await self._directory.lookup(address.topic)
            if status is None or status.refusal(address) is None:
                self._writer.refusal_reply(address, record, request_id)

        task = asyncio.ensure_future(send_when_known())
        self._lookups.add(task)
        task.add_done_callback(self._lookups.discard)

    def _internal_failure(
        self, tp: TopicPartition, offset: int, raw: bytes, answer: Answer | None, exc: Exception
    ) -> None:
        log.exception("request at %s:%d@%d failed", tp.topic, tp.partition, offset, exc_info=exc)
        message = f"internal error: {type(exc).__name__}"
        if answer is not None and not answer.finished and self.answers.get(answer.request_id) is answer:
            self.runner.abort(answer.request_id)
            self._writer.error(answer, ErrorCode.INTERNAL, message, dead_letter=True)
            return
        self._writer.dead_letter(
            tp.topic, tp.partition, offset, raw, ErrorCode.INTERNAL, message, None,
            on_acked=lambda: self.offsets.done(tp, offset),
        )

    def _settled(self, answer: Answer) -> None:
        """The answer's results copy is acknowledged: its offsets are finished."""
        if self.answers.get(answer.request_id) is answer:
            del self.answers[answer.request_id]
        self.offsets.done(TopicPartition(answer.topic, answer.partition), answer.offset)
        for extra_tp, extra_offset in answer.extra_offsets:
            self.offsets.done(extra_tp, extra_offset)

    # ---- events from the engine thread (run on the loop) ------------------------------------

    def _on_event(self, answer: Answer, event: GenerationEvent) -> None:
        try:
            self._handle_event(answer, event)
        except Exception as exc:
            self._internal_failure(TopicPartition(answer.topic, answer.partition), answer.offset, answer.raw, answer, exc)

    def _handle_event(self, answer: Answer, event: GenerationEvent) -> None:
        if answer.finished:
            return
        answer.prompt_tokens = event.prompt_tokens or answer.prompt_tokens
        if event.text or event.token_ids:
            answer.adapter_resolved = True  # tokens mean the adapter was found and loaded
            answer.add(event.text, event.token_ids)
            if answer.request.stream:
                self._writer.tokens_added(answer)
        if not event.is_final:
            return
        if event.adapter_tier is not None and event.finish_reason is not EngineFinish.ERROR:
            answer.adapter_resolved = True  # an error may name the tier it looked in: not a resolution
            self.metrics.adapter_tier.labels(self._writer.label(answer), event.adapter_tier).inc()
        if event.finish_reason is EngineFinish.ERROR:
            code, bad_input = wire_code(event.error_code)
            self._writer.error(answer, code, event.error_message, dead_letter=bad_input)
        elif event.finish_reason is EngineFinish.EXPIRED:
            self._writer.error(answer, ErrorCode.EXPIRED, "deadline passed while waiting; nothing was computed")
        elif answer.expired:
            self._writer.error(answer, ErrorCode.EXPIRED, "deadline passed during generation")
        else:
            self._writer.final(answer, FinishReason(event.finish_reason.value))

    def _expire(self, answer: Answer) -> None:
        answer.deadline_timer = None
        if not answer.finished:
            answer.expired = True
            self.runner.abort(answer.request_id)

    def _on_cancel(self, request_id: str) -> None:
        if request_id in self.answers:
            self.runner.abort(request_id)

    # ---- rebalance ----------------------------------------------------------------------------

    def revoked(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.offsets.forget(tp)
            self.epochs.forget(tp)
            self.watchdog.revoked(tp)

    def assigned(self, partitions: list[TopicPartition]) -> None:
        now_s = time.monotonic()
        for tp in partitions:
            self.watchdog.assigned(tp, now_s)


def _generation_request(request: InferenceRequest) -> GenerationRequest:
    params = request.params
    sampling = EngineSampling(
        max_new_tokens=params.max_new_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k,
        stop=tuple(params.stop),
        seed=params.seed if params.seed is not None else derived_seed(request.request_id),
    )
    deadline_s = request.deadline_ms / 1000.0 if request.deadline_ms is not None else None
    return GenerationRequest(request.request_id, request.prompt, request.adapter_id, sampling, deadline_s)


def _service_topics(topics: TopicNames) -> list[str]:
    return [spec.name for spec in default_topic_specs(topics)]


async def _describe_one(admin, topic: str) -> dict:
    (entry,) = await admin.describe_topics([topic])
    return entry


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, service: InferenceService) -> None:
        self._service = service

    async def on_partitions_revoked(self, revoked) -> None:
        consumer = self._service._consumer
        if consumer is not None and revoked:
            await self._service._commit(consumer)
        self._service.revoked(list(revoked))
        self._service.metrics.assigned_partitions.set(0)  # eager protocol: all are revoked

    async def on_partitions_assigned(self, assigned) -> None:
        consumer = self._service._consumer
        self._service.metrics.assigned_partitions.set(len(assigned))
        self._service.assigned(list(assigned))
        try:
            await self._service.epochs.claim(consumer, list(assigned))
        except Exception:  # answers then carry the request's own attempt; logged for operators
            log.exception("could not claim partition epochs for %s", sorted(assigned))
