"""The inference consumer: Kafka requests in, engine work off the event loop, answers out.

Flow per record: decode/validate → admit (an `Answer`) → the engine thread generates → events
come back to the loop through `call_soon_threadsafe` → token chunks are batched on a short
flush interval → a Final (or Error) to the reply address and a copy to the results topic →
the offset becomes committable once the results copy is acknowledged and every lower offset of
its partition is answered too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from aiokafka import ConsumerRebalanceListener, TopicPartition

from consumers.answer import Answer, derived_seed
from consumers.cache_metrics import CacheCollector
from consumers.chunk_batcher import ChunkBatcher
from consumers.config import ServeConfig
from consumers.control import ControlListener
from consumers.epochs import PartitionEpochs
from consumers.error_map import wire_code
from consumers.metrics import HealthServer, Metrics, adapter_label
from consumers.outbox import Outbox
from consumers.registry import AdapterRegistryListener
from gpu_engine.types import (
    GenerationEvent,
    GenerationRequest,
)
from gpu_engine.types import (
    FinishReason as EngineFinish,
)
from gpu_engine.types import (
    SamplingParams as EngineSampling,
)
from schemas import (
    DeadLetter,
    ErrorCode,
    FinishReason,
    InferenceRequest,
    InvalidEvent,
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

_RESEND_DELAY_S = 0.5


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
        self.offsets = OffsetTracker()
        self.answers: dict[str, Answer] = {}
        self.ready = asyncio.Event()
        self.metrics = Metrics()
        cache_stats = getattr(runner, "cache_stats", None)
        if cache_stats is not None:
            self.metrics.registry.register(CacheCollector(cache_stats.snapshot))
        self.registry: AdapterRegistryListener | None = None
        self.health: HealthServer | None = None
        self._stopping = asyncio.Event()
        self._paused = False
        self._consumer = None
        self._outbox: Outbox | None = None
        self._batcher: ChunkBatcher | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.epochs: PartitionEpochs | None = None
        self._served_by = config.served_by

    @property
    def chunks_per_reply_record(self) -> float:
        """TokenChunks per reply record sent for requests that accept ChunkBatch records (1.0: none packed)."""
        batcher = self._batcher
        return batcher.chunks_sent / batcher.records_sent if batcher is not None and batcher.records_sent else 1.0

    def stop(self) -> None:
        """Stop intake; `run` drains in-flight requests, commits, and returns."""
        self._stopping.set()

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        specs = default_topic_specs(self.topics, request_partitions=self.config.request_partitions)
        await ensure_topics(self.kafka, specs)
        async with admin_client(self.kafka) as admin:
            self.epochs = PartitionEpochs(admin, self.config.group_id)
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
        self._outbox = Outbox(producer)
        self._outbox.start()
        self._batcher = ChunkBatcher(self._outbox, self._loop)
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
            self.health = HealthServer(
                self.metrics, self.ready.is_set, self.config.metrics_host, self.config.metrics_port
            )
            await self.health.start()
        try:
            await self._poll_loop(consumer)
            await self._drain()
            await self._commit(consumer)
        finally:
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

    def _apply_backpressure(self, consumer) -> None:
        inflight = len(self.answers)
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
        self.offsets.track(tp, offset)
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
        self.metrics.requests.labels(adapter_label(request.adapter_id)).inc()
        if request.deadline_ms is not None and request.deadline_ms <= time.time() * 1000:
            self._send_error(answer, ErrorCode.EXPIRED, "deadline passed before it was started")
            return
        if request.deadline_ms is not None:
            delay_s = request.deadline_ms / 1000.0 - time.time()
            answer.deadline_timer = self._loop.call_later(delay_s, self._expire, answer)
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
        gen = GenerationRequest(request.request_id, request.prompt, request.adapter_id, sampling, deadline_s)
        answer.submitted_s = time.monotonic()
        loop = self._loop
        self.runner.submit(gen, lambda ev: loop.call_soon_threadsafe(self._on_event, answer, ev))

    def _refuse(self, tp: TopicPartition, offset: int, raw: bytes, exc: InvalidEvent) -> None:
        """A record that is not a valid request: dead-letter it, tell the sender if we can."""
        if exc.request_id is not None and exc.reply_to is not None:
            attempt = exc.attempt + self.epochs.epoch(tp)
            request = InferenceRequest(request_id=exc.request_id, prompt="", reply_to=exc.reply_to)
            answer = Answer(
                request, raw, tp.topic, tp.partition, offset, attempt=attempt, served_by=self._served_by
            )
            self._outbox.put(
                exc.reply_to.topic,
                encode(answer.error(exc.code, exc.message)),
                key=exc.request_id.encode(),
                partition=exc.reply_to.partition,
                best_effort=True,
            )
        self._dead_letter(
            tp.topic, tp.partition, offset, raw, exc.code, exc.message, exc.request_id,
            on_delivered=lambda ok: ok and self.offsets.done(tp, offset),
        )

    # ---- events from the engine thread (run on the loop) ------------------------------------

    def _on_event(self, answer: Answer, event: GenerationEvent) -> None:
        if answer.finished:
            return
        answer.prompt_tokens = event.prompt_tokens or answer.prompt_tokens
        if event.text or event.token_ids:
            answer.add(event.text, event.token_ids)
            if answer.request.stream:
                self._schedule_flush(answer)
        if not event.is_final:
            return
        if event.adapter_tier is not None:
            self.metrics.adapter_tier.labels(adapter_label(answer.request.adapter_id), event.adapter_tier).inc()
        if event.finish_reason is EngineFinish.ERROR:
            code, bad_input = wire_code(event.error_code)
            self._send_error(answer, code, event.error_message, dead_letter=bad_input)
        elif event.finish_reason is EngineFinish.EXPIRED:
            self._send_error(answer, ErrorCode.EXPIRED, "deadline passed while waiting; nothing was computed")
        elif answer.expired:
            self._send_error(answer, ErrorCode.EXPIRED, "deadline passed during generation")
        else:
            self._send_final(answer, FinishReason(event.finish_reason.value))

    def _schedule_flush(self, answer: Answer) -> None:
        first = answer.seq == 0
        if first or len(answer.pending_ids) >= self.config.chunk_max_tokens:
            self._flush(answer)
        elif answer.flush_timer is None:
            answer.flush_timer = self._loop.call_later(
                self.config.chunk_flush_ms / 1000.0, self._flush, answer
            )

    def _flush(self, answer: Answer) -> None:
        if answer.flush_timer is not None:
            answer.flush_timer.cancel()
            answer.flush_timer = None
        if answer.finished or not answer.has_pending:
            return
        reply_to = answer.request.reply_to
        chunk = answer.take_chunk()
        if reply_to is not None and answer.request.batch_chunks:
            self._batcher.add(reply_to, chunk)
        elif reply_to is not None:
            self._outbox.put(
                reply_to.topic,
                encode(chunk),
                key=answer.request_id.encode(),
                partition=reply_to.partition,
                best_effort=True,
            )

    def _send_final(self, answer: Answer, reason: FinishReason) -> None:
        if answer.request.stream:
            self._flush(answer)
        final = answer.final(reason)
        label = adapter_label(answer.request.adapter_id)
        m = self.metrics
        m.finished.labels(label, reason.value).inc()
        m.prompt_tokens.labels(label).inc(final.usage.prompt_tokens)
        m.completion_tokens.labels(label).inc(final.usage.completion_tokens)
        m.queue_ms.labels(label).observe(final.timings.queue_ms)
        m.ttft_ms.labels(label).observe(final.timings.ttft_ms)
        m.total_ms.labels(label).observe(final.timings.total_ms)
        self._finish(answer, encode(final))

    def _send_error(
        self, answer: Answer, code: ErrorCode, message: str, *, dead_letter: bool = False
    ) -> None:
        self.metrics.errors.labels(adapter_label(answer.request.adapter_id), code.value).inc()
        if dead_letter:
            self._dead_letter(
                answer.topic, answer.partition, answer.offset, answer.raw, code, message,
                answer.request_id,
            )
        self._finish(answer, encode(answer.error(code, message)))

    def _finish(self, answer: Answer, value: bytes) -> None:
        """Send the last record to the requester and the results topic; done once acknowledged."""
        answer.finished = True
        answer.cancel_timers()
        key = answer.request_id.encode()
        reply_to = answer.request.reply_to
        if reply_to is not None:
            self._batcher.flush(reply_to)  # the request's last chunk goes before its last record
            self._outbox.put(
                reply_to.topic, value, key=key, partition=reply_to.partition, best_effort=True
            )
        tp = TopicPartition(answer.topic, answer.partition)

        def send_copy() -> None:
            self._outbox.put(self.topics.results, value, key=key, on_delivered=delivered)

        def delivered(ok: bool) -> None:
            if not ok:  # the broker never acknowledged it: send again, the offset waits
                log.warning("results copy of %s not acknowledged; resending", answer.request_id)
                self._loop.call_later(_RESEND_DELAY_S, send_copy)
                return
            if self.answers.get(answer.request_id) is answer:
                del self.answers[answer.request_id]
            self.offsets.done(tp, answer.offset)
            for extra_tp, extra_offset in answer.extra_offsets:
                self.offsets.done(extra_tp, extra_offset)

        send_copy()

    def _dead_letter(
        self, topic, partition, offset, raw, code, reason, request_id, on_delivered=None
    ) -> None:
        record = DeadLetter(
            source_topic=topic,
            partition=partition,
            offset=offset,
            code=code,
            reason=reason,
            original=raw,
            request_id=request_id,
            ts_ms=int(time.time() * 1000),
        )
        self.metrics.dead_letters.labels(code.value).inc()
        key = request_id.encode() if request_id else None
        self._outbox.put(
            self.topics.requests_dlq, encode(record), key=key, on_delivered=on_delivered
        )

    def _expire(self, answer: Answer) -> None:
        answer.deadline_timer = None
        if not answer.finished:
            answer.expired = True
            self.runner.abort(answer.request_id)

    def _on_cancel(self, request_id: str) -> None:
        if request_id in self.answers:
            self.runner.abort(request_id)

    def revoked(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.offsets.forget(tp)
            self.epochs.forget(tp)


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
        try:
            await self._service.epochs.claim(consumer, list(assigned))
        except Exception:  # answers then carry the request's own attempt; logged for operators
            log.exception("could not claim partition epochs for %s", sorted(assigned))
