"""Answers out: chunks and the last record to the requester, a copy to results, dead letters.

Engine events reach the loop through `handoff` (one wake-up per engine step). After each batch
the writer sends the chunks that are due (`answer.chunk_due`: the first token at once, then chunks
sized by the stream's rate, held at most chunk_flush_ms), so the chunks of one step share one
record per reply address; one timer, at the earliest hold deadline, covers a stream that stalls.

Two kinds of record carry a commit: the results copy of an answer, and the dead letter of a record
that was refused before it became an answer. Their partition offset is finished only when the
broker acknowledged them. If transient trouble outlasts the retry policy they are queued again
(the offset waits; the commit watchdog reports it); if the broker refuses them for good they are
logged and counted and the offset is finished anyway, since retrying cannot help and holding the
partition would stop everyone's answers behind it.

Replies are different: a reply topic belongs to a requester. When a send there fails for good, the
request is aborted, answered with an Error on the results topic, dead-lettered with the reason,
and the reply topic is remembered as refused so that the next request naming it is refused at
admission.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable

import msgspec

from consumers.inference.answer import Answer, chunk_due
from consumers.inference.chunk_batcher import ChunkBatcher
from consumers.config import ServeConfig
from consumers.metrics import Metrics, adapter_label
from gpu_engine.engine_thread import LoopHandoff
from streamer.outbox import Outbox
from streamer.reply_topics import ReplyTopicDirectory, TopicStatus
from streamer.send_policy import SendOutcome
from schemas import Error, ErrorCode, Final, FinishReason, ReplyAddress, encode
from schemas.deadletter import dead_letter
from schemas.inference import Lineage
from streamer import TopicNames

log = logging.getLogger(__name__)


class AnswerWriter:
    def __init__(
        self,
        *,
        outbox: Outbox,
        loop: asyncio.AbstractEventLoop,
        topics: TopicNames,
        config: ServeConfig,
        metrics: Metrics,
        directory: ReplyTopicDirectory,
        lookup: Callable[[str], Answer | None],
        abort: Callable[[str], None],
        settled: Callable[[Answer], None],
    ) -> None:
        self._outbox = outbox
        self._loop = loop
        self._topics = topics
        self._config = config
        self._metrics = metrics
        self._directory = directory
        self._lookup = lookup
        self._abort = abort
        self._settled = settled
        self.batcher = ChunkBatcher(outbox, loop, on_failed=self._on_chunk_failed)
        self.handoff = LoopHandoff(loop, after_batch=self.flush_due)
        self._held: dict[Answer, None] = {}  # streaming answers with tokens not yet sent, oldest first
        self._hold_timer: asyncio.TimerHandle | None = None
        self._hold_timer_at = 0.0

    # ---- streaming ---------------------------------------------------------------------------

    def tokens_added(self, answer: Answer) -> None:
        """New text for a streaming answer: the first chunk leaves at once, later ones when due."""
        if answer.seq == 0:
            self.flush(answer)
        else:
            self._held[answer] = None

    def flush_due(self) -> None:
        """Send the held chunks that are due; re-arm the one timer for the rest."""
        now_s = time.monotonic()
        hold_s, max_tokens = self._config.chunk_flush_ms / 1000.0, self._config.chunk_max_tokens
        earliest_s = None
        for answer in list(self._held):
            if chunk_due(answer.num_pending_tokens, now_s - answer.pending_since_s, answer.token_interval_s,
                         hold_s, max_tokens) or answer.finished:
                self.flush(answer)
            elif earliest_s is None or answer.pending_since_s < earliest_s:
                earliest_s = answer.pending_since_s
        if earliest_s is None:
            return
        deadline_s = earliest_s + hold_s
        if self._hold_timer is None or deadline_s < self._hold_timer_at:
            if self._hold_timer is not None:
                self._hold_timer.cancel()
            self._hold_timer = self._loop.call_at(deadline_s, self._on_hold_timer)
            self._hold_timer_at = deadline_s

    def _on_hold_timer(self) -> None:
        self._hold_timer = None
        self.flush_due()

    def flush(self, answer: Answer) -> None:
        self._held.pop(answer, None)
        if answer.finished or not answer.has_pending:
            return
        chunk = answer.take_chunk()
        reply_to = answer.request.reply_to
        if reply_to is None or answer.reply_failed:
            return
        if answer.request.batch_chunks:
            self.batcher.add(reply_to, chunk)
        else:
            self._outbox.put(
                reply_to.topic, encode(chunk), key=answer.request_id.encode(), partition=reply_to.partition,
                on_done=lambda outcome: self._reply_done(answer, outcome),
            )

    # ---- the last record ------------------------------------------------------------------------

    def final(self, answer: Answer, reason: FinishReason, lineage: Lineage | None = None) -> None:
        if answer.request.stream:
            self.flush(answer)
        final = msgspec.structs.replace(answer.final(reason), lineage=lineage)
        label = self.label(answer)
        m = self._metrics
        m.finished.labels(label, reason.value).inc()
        m.prompt_tokens.labels(label).inc(final.usage.prompt_tokens)
        m.completion_tokens.labels(label).inc(final.usage.completion_tokens)
        m.queue_ms.labels(label).observe(final.timings.queue_ms)
        m.ttft_ms.labels(label).observe(final.timings.ttft_ms)
        m.total_ms.labels(label).observe(final.timings.total_ms)
        self._finish(answer, final)

    def error(self, answer: Answer, code: ErrorCode, message: str, *, dead_letter: bool = False) -> None:
        self._metrics.errors.labels(self.label(answer), code.value).inc()
        if dead_letter:
            self.dead_letter(answer.topic, answer.partition, answer.offset, answer.raw, code, message, answer.request_id)
        self._finish(answer, answer.error(code, message))

    def label(self, answer: Answer) -> str:
        return adapter_label(answer.request.adapter_id, answer.adapter_resolved)

    def _finish(self, answer: Answer, record: Final | Error) -> None:
        """The last record to the requester; a copy without the secret reply token to results."""
        answer.finished = True
        answer.cancel_timers()
        self._metrics.requests.labels(self.label(answer)).inc()
        reply_to = answer.request.reply_to
        if reply_to is not None and not answer.reply_failed:
            value = encode(record)
            self.batcher.then(  # the request's last chunk goes before its last record
                reply_to, lambda: self._outbox.put(
                    reply_to.topic, value, key=answer.request_id.encode(), partition=reply_to.partition,
                    on_done=lambda outcome: self._reply_done(answer, outcome, last=True),
                ),
            )
        self._results_copy(answer, encode(results_copy(record, answer.raw)))

    def _results_copy(self, answer: Answer, value: bytes) -> None:
        def done(outcome: SendOutcome) -> None:
            if outcome.ok:
                self._settled(answer)
                return
            self._metrics.send_failures.labels("results", outcome.value).inc()
            if outcome is SendOutcome.GAVE_UP:  # transient trouble outlasted the policy: the offset waits
                self._loop.call_later(self._config.send_retry.max_backoff_s, self._results_copy, answer, value)
                return
            log.error("results copy of %s refused for good (%s); the offset moves on", answer.request_id, outcome.value)
            self._settled(answer)

        self._outbox.put(self._topics.results, value, key=answer.request_id.encode(), on_done=done)

    # ---- reply failures ------------------------------------------------------------------------

    def _on_chunk_failed(self, request_id: str, outcome: SendOutcome) -> None:
        answer = self._lookup(request_id)
        if answer is not None:
            self._reply_done(answer, outcome)

    def _reply_done(self, answer: Answer, outcome: SendOutcome, *, last: bool = False) -> None:
        if outcome.ok:
            return
        self._metrics.send_failures.labels("reply", outcome.value).inc()
        if answer.reply_failed:
            return
        answer.reply_failed = True
        reply_to = answer.request.reply_to
        if outcome in (SendOutcome.NO_SUCH_DESTINATION, SendOutcome.NOT_AUTHORIZED):
            self._directory.remember(reply_to.topic, TopicStatus(refused=outcome.wire_code))
        code, message = outcome.wire_code, f"answer records could not be sent to {reply_to.topic}: {outcome.value}"
        if last and outcome is SendOutcome.TOO_LARGE:  # the requester still learns how it ended
            self._outbox.put(
                reply_to.topic, encode(answer.error(code, message)), key=answer.request_id.encode(),
                partition=reply_to.partition,
            )
        if answer.finished:
            self.dead_letter(answer.topic, answer.partition, answer.offset, answer.raw, code, message, answer.request_id)
            return
        self._abort(answer.request_id)
        self.error(answer, code, message, dead_letter=True)

    # ---- dead letters ----------------------------------------------------------------------------

    def dead_letter(
        self,
        topic: str,
        partition: int,
        offset: int,
        raw: bytes,
        code: ErrorCode,
        reason: str,
        request_id: str | None,
        on_acked: Callable[[], None] | None = None,
    ) -> None:
        """Send a bounded dead letter; `on_acked` (the offset's finish) runs once it needs no more tries."""
        record = dead_letter(
            source_topic=topic, partition=partition, offset=offset, code=code, reason=reason, original=raw,
            request_id=request_id, ts_ms=int(time.time() * 1000),
            max_original_bytes=self._config.dead_letter_max_original_bytes,
        )
        self._metrics.dead_letters.labels(code.value).inc()
        value, key = encode(record), request_id.encode() if request_id else None

        def send() -> None:
            self._outbox.put(self._topics.requests_dlq, value, key=key, on_done=done)

        def done(outcome: SendOutcome) -> None:
            if not outcome.ok:
                self._metrics.send_failures.labels("dead_letter", outcome.value).inc()
                if outcome is SendOutcome.GAVE_UP and on_acked is not None:
                    self._loop.call_later(self._config.send_retry.max_backoff_s, send)
                    return
                log.error("dead letter of %s@%d not sent (%s)", topic, offset, outcome.value)
            if on_acked is not None:
                on_acked()

        send()

    def refusal_reply(self, address: ReplyAddress, record: bytes, request_id: str) -> None:
        """An Error for a record that never became an answer; the caller checked the address."""
        self._outbox.put(
            address.topic, record, key=request_id.encode(), partition=address.partition,
            on_done=lambda outcome: outcome.ok or self._metrics.send_failures.labels("reply", outcome.value).inc(),
        )


def results_copy(record: Final | Error, request_raw: bytes) -> Final | Error:
    """The record as kept on the results topic: without the requester's secret token, with the
    digest of the request record it answers (only that record may be answered from it again)."""
    return msgspec.structs.replace(record, reply_token=None, request_sha256=hashlib.sha256(request_raw).hexdigest())
