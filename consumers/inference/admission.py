"""Admission: each polled record becomes a running answer, or is refused and dead-lettered.

Per record: decode and validate → the same request already in flight? answer it once → being
re-served after a takeover? ask the answer memory whether it was answered → check the reply
address (the pattern, then the topic's existence, looked up off the poll path) → answer it again
from the results topic when it was answered (the offset is finished once that reply is
acknowledged), else refuse it `base_not_served` when it names a base other than this consumer's,
else start it on the engine, with a deadline timer. A record that does not decode
is dead-lettered, and an Error goes to its reply address when one is readable and allowed.
Whatever goes wrong after that ends as a typed Error plus a dead letter (`internal`), never as a
lost offset. Engine events come back through the writer's `LoopHandoff` (one loop wake-up per
engine step) and are applied on the loop (translate.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from consumers.inference.answer import Answer
from consumers.inference.answer_memory import AnswerMemory, resend_records
from consumers.inference.answer_writer import AnswerWriter
from consumers.inference.translate import apply_event, generation_request
from consumers.metrics import Metrics
from gpu_engine.types import GenerationEvent, GenerationRequest
from schemas import Error, ErrorCode, Final, InferenceRequest, InvalidEvent, ReplyAddress, decode_request, encode
from streamer.epochs import PartitionEpochs
from streamer.outbox import Outbox
from streamer.reply_topics import ReplyPolicy, ReplyTopicDirectory, TopicStatus
from streamer.send_policy import SendOutcome
from streamer.transport import TopicPartition

log = logging.getLogger(__name__)


class EngineHandle(Protocol):
    """What the service needs of the engine (gpu_engine.engine_thread.EngineThread fits).

    Optional: `register_adapter(ref)` / `retire_adapter(id)` (the adapters topic is followed only
    when present) and `cache_stats` (a gpu_engine.cache_stats.CacheStats, exported to /metrics).
    """

    def start(self) -> None: ...
    def submit(self, req: GenerationRequest, on_event: Callable[[GenerationEvent], None]) -> None: ...
    def abort(self, request_id: str) -> None: ...
    def stop(self, timeout_s: float = ...) -> None: ...


class Admission:
    def __init__(
        self,
        *,
        engine: EngineHandle,
        writer: AnswerWriter,
        answers: dict[str, Answer],
        epochs: PartitionEpochs,
        finish: Callable[[TopicPartition, int], None],
        reply_policy: ReplyPolicy,
        directory: ReplyTopicDirectory,
        metrics: Metrics,
        served_by: str,
        memory: AnswerMemory,
        outbox: Outbox,
        served_base: str | None = None,
    ) -> None:
        self.answers = answers  # request_id → the answer in flight (shared with the writer)
        self.lookups: set[asyncio.Task[None]] = set()  # admissions waiting for a reply-topic lookup
        self._recalls: set[asyncio.Task[None]] = set()  # admissions asking the answer memory (in `answers`)
        self._engine = engine
        self._writer = writer
        self._epochs = epochs
        self._finish = finish
        self._reply_policy = reply_policy
        self._directory = directory
        self._metrics = metrics
        self._served_by = served_by
        self._memory = memory
        self._outbox = outbox
        self._served_base = served_base  # the base this consumer serves; a request naming another is refused
        self._recalled: dict[str, Final | Error] = {}  # request_id → its answer on record, until started
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def num_inflight(self) -> int:
        return len(self.answers) + len(self.lookups)

    async def wait_idle(self) -> None:
        """Until no answer is in flight."""
        await self._idle.wait()

    def admit(self, tp: TopicPartition, offset: int, raw: bytes) -> None:
        """Take one record on; whatever goes wrong, it ends answered or dead-lettered."""
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
            attempt = request.attempt + self._epochs.epoch(tp)
            answer = Answer(request, raw, tp.topic, tp.partition, offset, attempt=attempt, served_by=self._served_by)
            self.answers[request.request_id] = answer
            self._idle.clear()
            recalled = self._memory.recall(tp, offset, request.request_id)
            if recalled is None:
                self._check_reply_then_start(answer)
            else:
                self._spawn(self._recall_then_start(answer, recalled), self._recalls)
        except Exception as exc:
            self._internal_failure(tp, offset, raw, answer, exc)

    def settled(self, answer: Answer) -> None:
        """The answer's results copy (or its reply, when reused) is acknowledged: its offsets are finished."""
        if self.answers.get(answer.request_id) is answer:
            del self.answers[answer.request_id]
            self._recalled.pop(answer.request_id, None)
            if not self.answers:
                self._idle.set()
        self._finish(TopicPartition(answer.topic, answer.partition), answer.offset)
        for extra_tp, extra_offset in answer.extra_offsets:
            self._finish(extra_tp, extra_offset)

    def cancel(self, request_id: str) -> None:
        if request_id in self.answers:
            self._engine.abort(request_id)

    def abort_all(self) -> None:
        for answer in list(self.answers.values()):
            self._engine.abort(answer.request_id)

    def close(self) -> None:
        for task in (*self.lookups, *self._recalls):
            task.cancel()

    # ---- answers on record ----------------------------------------------------------------------

    async def _recall_then_start(self, answer: Answer, recalled: Awaitable[Final | Error | None]) -> None:
        try:
            record = await recalled
            if record is not None:
                self._recalled[answer.request_id] = record
            self._check_reply_then_start(answer)
        except Exception as exc:
            self._internal_failure(TopicPartition(answer.topic, answer.partition), answer.offset, answer.raw, answer, exc)

    def _reuse(self, answer: Answer, record: Final | Error) -> None:
        """Answer again from the results topic; the offset is finished once the reply is acknowledged."""
        answer.finished = True
        self._metrics.reused_answers.inc()
        reply_to = answer.request.reply_to
        if reply_to is None:
            self.settled(answer)
            return
        records = resend_records(record, answer.attempt, answer.request)

        def done(outcome: SendOutcome) -> None:
            if not outcome.ok:  # the answer stays on record; the requester's topic cannot take it
                self._metrics.send_failures.labels("reply", outcome.value).inc()
                log.warning("reused answer of %s not sent to %s (%s)", answer.request_id, reply_to.topic, outcome.value)
            self.settled(answer)

        for i, resent in enumerate(records):
            self._outbox.put(
                reply_to.topic, encode(resent), key=answer.request_id.encode(), partition=reply_to.partition,
                on_done=done if i == len(records) - 1 else None,
            )

    # ---- the reply address ------------------------------------------------------------------

    def _check_reply_then_start(self, answer: Answer) -> None:
        reply_to = answer.request.reply_to
        if reply_to is None:
            self._start(answer)
            return
        refusal = self._reply_policy.refusal(reply_to.topic)
        if refusal is not None:
            self._refuse_reply(answer, ErrorCode.REPLY_TOPIC_REFUSED, refusal)
            return
        status = self._directory.cached(reply_to.topic)
        if status is not None:
            self._start_if_deliverable(answer, status)
            return
        self._spawn(self._lookup_then_start(answer))

    async def _lookup_then_start(self, answer: Answer) -> None:
        try:
            status = await self._directory.lookup(answer.request.reply_to.topic)
            if status is None:  # the broker could not say: try; a failed send ends the request
                self._start(answer)
            else:
                self._start_if_deliverable(answer, status)
        except Exception as exc:
            self._internal_failure(TopicPartition(answer.topic, answer.partition), answer.offset, answer.raw, answer, exc)

    def _start_if_deliverable(self, answer: Answer, status: TopicStatus) -> None:
        refusal = status.refusal(answer.request.reply_to)
        if refusal is None:
            self._start(answer)
        else:
            self._refuse_reply(answer, *refusal)

    def _refuse_reply(self, answer: Answer, code: ErrorCode, message: str) -> None:
        """Nothing goes to this reply address: the Error is on the results topic and the dead letter."""
        answer.reply_failed = True
        self._writer.error(answer, code, message, dead_letter=True)

    def _spawn(self, coro, tasks: set[asyncio.Task[None]] | None = None) -> None:
        tasks = self.lookups if tasks is None else tasks
        task = asyncio.ensure_future(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    # ---- the engine ------------------------------------------------------------------------------

    def _start(self, answer: Answer) -> None:
        recalled = self._recalled.pop(answer.request_id, None)
        if recalled is not None and recalled.request_sha256 == hashlib.sha256(answer.raw).hexdigest():
            self._reuse(answer, recalled)  # this very record was answered before: deadlines no longer matter
            return
        request = answer.request
        if request.base is not None and request.base != self._served_base:
            served = f"base {request.base!r} is not served here (this consumer serves {self._served_base!r})"
            self._writer.error(answer, ErrorCode.BASE_NOT_SERVED, served)
            return
        if request.deadline_ms is not None and request.deadline_ms <= time.time() * 1000:
            self._writer.error(answer, ErrorCode.EXPIRED, "deadline passed before it was started")
            return
        loop = asyncio.get_running_loop()
        if request.deadline_ms is not None:
            delay_s = request.deadline_ms / 1000.0 - time.time()
            answer.deadline_timer = loop.call_later(delay_s, self._expire, answer)
        answer.submitted_s = time.monotonic()
        self._engine.submit(generation_request(request), self._writer.handoff.bind(self._on_event, answer))

    def _on_event(self, answer: Answer, event: GenerationEvent) -> None:
        try:
            apply_event(answer, event, self._writer, self._metrics)
        except Exception as exc:
            self._internal_failure(TopicPartition(answer.topic, answer.partition), answer.offset, answer.raw, answer, exc)

    def _expire(self, answer: Answer) -> None:
        answer.deadline_timer = None
        if not answer.finished:
            answer.expired = True
            self._engine.abort(answer.request_id)

    # ---- refusals and failures ------------------------------------------------------------------

    def _refuse(self, tp: TopicPartition, offset: int, raw: bytes, exc: InvalidEvent) -> None:
        """A record that is not a valid request: dead-letter it, tell the sender if its address is allowed."""
        if exc.request_id is not None and exc.reply_to is not None:
            attempt = exc.attempt + self._epochs.epoch(tp)
            request = InferenceRequest(  # a stand-in carrying the refused record's address (its prompt is unused)
                request_id=exc.request_id, prompt="-", reply_to=exc.reply_to, reply_token=exc.reply_token
            )
            answer = Answer(request, raw, tp.topic, tp.partition, offset, attempt=attempt, served_by=self._served_by)
            self._reply_refusal(exc.reply_to, encode(answer.error(exc.code, exc.message)), exc.request_id)
        self._writer.dead_letter(
            tp.topic, tp.partition, offset, raw, exc.code, exc.message, exc.request_id,
            on_acked=lambda: self._finish(tp, offset),
        )

    def _reply_refusal(self, address: ReplyAddress, record: bytes, request_id: str) -> None:
        if self._reply_policy.refusal(address.topic) is not None:
            return

        async def send_when_known() -> None:
            status = await self._directory.lookup(address.topic)
            if status is None or status.refusal(address) is None:
                self._writer.refusal_reply(address, record, request_id)

        self._spawn(send_when_known())

    def _internal_failure(
        self, tp: TopicPartition, offset: int, raw: bytes, answer: Answer | None, exc: Exception
    ) -> None:
        log.exception("request at %s:%d@%d failed", tp.topic, tp.partition, offset, exc_info=exc)
        message = f"internal error: {type(exc).__name__}"
        if answer is not None and not answer.finished and self.answers.get(answer.request_id) is answer:
            self._engine.abort(answer.request_id)
            self._writer.error(answer, ErrorCode.INTERNAL, message, dead_letter=True)
            return
        self._writer.dead_letter(
            tp.topic, tp.partition, offset, raw, ErrorCode.INTERNAL, message, None,
            on_acked=lambda: self._finish(tp, offset),
        )
