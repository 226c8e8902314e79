"""Answer memory: which of the requests being re-served already have their answer on record.

A consumer that takes a request partition over (start or rebalance) re-reads what its previous
owner had not committed. Some of those requests were answered — their Final (or Error) is on the
compacted results topic, keyed by request_id — and only the commit was lost (a crash, a commit
interval not yet due). `AnswerMemory` reads the results topic back, not from its beginning but
from the timestamp of the first record being re-served (less `answer_lookback_margin_ms` for
clock skew between producers), located with Kafka's ListOffsets by time, up to the topic's end at
that moment; the read stops at `answer_lookback_max_records` records, `answer_memory_max_bytes`
of answers kept, or `answer_lookback_max_s`. Answers kept: request_id → the latest record, each
handed out once (`recall`); the index is dropped when no partition has records left to re-serve.

A re-served range is [the committed offset, the partition's end) at the takeover, as polled:
records appended later are new and are not looked up, and a partition without lag costs no read.
A request not found (never answered, or beyond a bound) is computed as usual. `resend_records` makes the records that answer it again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass

import msgspec

from consumers.config import ServeConfig
from schemas import Error, Final, InferenceRequest, InvalidEvent, ReplyRecord, TokenChunk, decode_reply
from streamer.transport import GroupConsumer, PartitionReader, Record, TopicPartition, Transport

log = logging.getLogger(__name__)

_POLL_MS = 200


class AnswerIndex:
    """request_id → the raw answer record, bounded in bytes; the latest record of a key wins."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.num_bytes = 0
        self.is_full = False  # a record did not fit: nothing more is kept
        self._values: dict[str, bytes] = {}

    def __len__(self) -> int:
        return len(self._values)

    def put(self, key: bytes | None, value: bytes | None) -> bool:
        """Keep one results record (a None value deletes its key); False when it did not fit."""
        if key is None:
            return True
        request_id = key.decode("utf-8", "replace")
        old = self._values.pop(request_id, None)
        if old is not None:
            self.num_bytes -= len(old)
        if value is None:  # a tombstone
            return True
        if self.num_bytes + len(value) > self.max_bytes:
            self.is_full = True
            return False
        self._values[request_id] = value
        self.num_bytes += len(value)
        return True

    def take(self, request_id: str) -> Final | Error | None:
        """The answer on record for `request_id`, once; None when there is none (or it is unreadable)."""
        value = self._values.pop(request_id, None)
        if value is None:
            return None
        self.num_bytes -= len(value)
        try:
            record = decode_reply(value)
        except InvalidEvent:
            log.warning("results record of %s does not decode; the request is computed again", request_id)
            return None
        if isinstance(record, Final | Error) and record.request_id == request_id:
            return record
        return None


def resend_records(record: Final | Error, attempt: int, request: InferenceRequest) -> list[ReplyRecord]:
    """What answers `request` again from its record, so that a client's ReplyDedup yields what it lacks.

    Under a higher attempt than the one on record, the answer starts afresh at seq 0: a client that
    finished drops it, one that got part of the stream (or none) gets the rest of the text (the
    dedup trims what it already delivered) and the Final. Under the same attempt (no new epoch
    could be claimed) the record goes again with its own seq, which the client takes only if it
    has not finished.
    """
    token = request.reply_token
    if attempt <= record.attempt:
        return [msgspec.structs.replace(record, reply_token=token)]
    records: list[ReplyRecord] = []
    if request.stream and isinstance(record, Final) and record.text:
        records.append(TokenChunk(record.request_id, attempt, 0, record.text, reply_token=token))
    records.append(msgspec.structs.replace(record, attempt=attempt, seq=len(records), reply_token=token))
    return records


@dataclass(slots=True)
class _Range:
    """A taken-over partition's records that may have an answer on record: [start, end)."""

    start: int
    end: int | None  # None until the takeover's look-ups answer (records may be polled before)
    from_ts_ms: int  # the first of them was written then
    generation: int  # the takeovers counted when it opened
    last_passed: int = -1  # the highest offset intake has admitted

    def holds(self, offset: int) -> bool:
        return self.start <= offset and (self.end is None or offset < self.end)

    @property
    def is_passed(self) -> bool:
        return self.end is not None and self.last_passed >= self.end - 1


class AnswerMemory:
    """Told of takeovers by intake; asked by admission about each re-served record."""

    def __init__(self, transport: Transport, results_topic: str, config: ServeConfig) -> None:
        self._transport = transport
        self._results_topic = results_topic
        self._config = config
        self._awaiting: dict[TopicPartition, int | None] = {}  # taken over, not polled → end (None: not known yet)
        self._ranges: dict[TopicPartition, _Range] = {}
        self._generation = 0  # takeovers so far
        self._index: AnswerIndex | None = None
        self._covered_from_ts_ms = 0  # the index holds answers written from then…
        self._covered_generation = 0  # …for the takeovers up to this one
        self._next: dict[TopicPartition, int] = {}  # results partitions: where the last read ended
        self._num_recalling = 0
        self._lock = asyncio.Lock()
        self._reader: PartitionReader | None = None
        self.num_read = 0  # results records read back, all look-backs together

    @property
    def num_answers(self) -> int:
        """Answers held for records still to be re-served."""
        return len(self._index) if self._index is not None else 0

    # ---- told by intake -------------------------------------------------------------------------

    def assigned(self, partitions: Sequence[TopicPartition]) -> None:
        """At once on assignment: a client may fetch records while `taken_over` still asks the group."""
        if self._config.reuse_answers and partitions:
            self._generation += 1
            self._awaiting.update(dict.fromkeys(partitions))

    async def taken_over(self, consumer: GroupConsumer, partitions: Sequence[TopicPartition]) -> None:
        """Where each newly assigned partition's re-served records end: nothing past the committed offset,
        nothing re-served."""
        if not self._config.reuse_answers or not partitions:
            return
        committed = await consumer.committed(partitions)
        missing = [tp for tp in partitions if committed.get(tp) is None]
        starts = await consumer.beginning_offsets(missing) if missing else {}
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            meta = committed.get(tp)
            end = ends[tp] if (meta.offset if meta is not None else starts[tp]) < ends[tp] else 0  # 0: no lag
            if tp in self._awaiting:
                if end:
                    self._awaiting[tp] = end
                else:
                    del self._awaiting[tp]
            rng = self._ranges.get(tp)
            if rng is not None and rng.end is None:
                rng.end = end
                self.passed(tp, rng.last_passed)

    def forget(self, partitions: Sequence[TopicPartition]) -> None:
        """Revoked partitions (or ones whose takeover could not be looked up): nothing looked up there."""
        for tp in partitions:
            self._awaiting.pop(tp, None)
            self._ranges.pop(tp, None)
        self._forget_if_unused()

    def polled(self, tp: TopicPartition, records: Sequence[Record]) -> None:
        """A batch of `tp` before it is admitted: the first after a takeover opens its range."""
        if not records or tp not in self._awaiting:
            return
        end = self._awaiting.pop(tp)
        if end is None or records[0].offset < end:
            self._ranges[tp] = _Range(records[0].offset, end, records[0].timestamp_ms, self._generation)

    def passed(self, tp: TopicPartition, offset: int) -> None:
        """Every record of `tp` up to `offset` was admitted: a range behind it is closed."""
        rng = self._ranges.get(tp)
        if rng is None:
            return
        rng.last_passed = max(rng.last_passed, offset)
        if rng.is_passed:
            del self._ranges[tp]
            self._forget_if_unused()

    # ---- asked by admission -----------------------------------------------------------------------

    def recall(self, tp: TopicPartition, offset: int, request_id: str) -> Awaitable[Final | Error | None] | None:
        """None when the record is not being re-served; else an awaitable of its answer on record."""
        rng = self._ranges.get(tp)
        if rng is None or not rng.holds(offset):
            return None
        self._num_recalling += 1
        return self._recall(rng, request_id)

    async def _recall(self, rng: _Range, request_id: str) -> Final | Error | None:
        try:
            try:
                await self._cover(rng.from_ts_ms, rng.generation)
            except Exception as exc:  # broker away, or no READ on the results topic: compute as before
                log.warning("answer look-back on %s failed (%r); computing instead", self._results_topic, exc)
                return None
            return self._index.take(request_id) if self._index is not None else None
        finally:
            self._num_recalling -= 1
            self._forget_if_unused()

    async def close(self) -> None:
        if self._reader is not None:
            await self._reader.stop()
            self._reader = None

    # ---- the look-back --------------------------------------------------------------------------

    async def _cover(self, from_ts_ms: int, generation: int) -> None:
        """Make the index hold the answers written since `from_ts_ms` for takeovers up to `generation`."""
        async with self._lock:
            if self._index is not None and self._covered_from_ts_ms <= from_ts_ms:
                if self._covered_generation >= generation:
                    return
                reader = await self._started_reader()
                starts = dict(self._next)  # a later takeover: read on from where the last read ended
            else:
                reader = await self._started_reader()
                margin_ms = int(self._config.answer_lookback_margin_ms)
                found = await reader.offsets_for_times(max(from_ts_ms - margin_ms, 0))
                starts = {tp: offset for tp, offset in found.items() if offset is not None}
                self._index = AnswerIndex(self._config.answer_memory_max_bytes)
                self._covered_from_ts_ms = from_ts_ms
            covered_generation = self._generation  # every takeover counted so far answered before these ends
            ends = await reader.end_offsets()
            await self._read(reader, {tp: starts.get(tp, end) for tp, end in ends.items()}, ends)
            self._next = ends
            self._covered_generation = covered_generation

    async def _read(
        self, reader: PartitionReader, starts: dict[TopicPartition, int], ends: dict[TopicPartition, int]
    ) -> None:
        config, index = self._config, self._index
        todo = {tp for tp, end in ends.items() if starts[tp] < end}
        for tp, end in ends.items():
            reader.seek(tp, starts[tp] if tp in todo else end)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + config.answer_lookback_max_s
        num_read = 0
        while todo:
            remaining_s = deadline - loop.time()
            budget = config.answer_lookback_max_records - num_read
            if remaining_s <= 0 or budget <= 0 or index.is_full:
                log.warning(
                    "answer look-back stopped at its bound after %d records (%d answers kept); "
                    "answers beyond it are computed again", num_read, len(index),
                )
                break
            batch = await reader.poll(timeout_ms=int(min(remaining_s * 1000, _POLL_MS)), max_records=budget)
            for tp, records in batch.items():
                for record in records:
                    if tp not in todo or record.offset >= ends[tp]:
                        todo.discard(tp)
                        break
                    num_read += 1
                    if not index.put(record.key, record.value):
                        break  # full: the loop's check ends the read
                    if record.offset >= ends[tp] - 1:
                        todo.discard(tp)
        self.num_read += num_read
        log.info("answer look-back read %d results records; %d answers on record", num_read, len(index))

    async def _started_reader(self) -> PartitionReader:
        if self._reader is None:
            reader = self._transport.reader(self._results_topic)
            await reader.start()
            self._reader = reader
        return self._reader

    def _forget_if_unused(self) -> None:
        if not self._ranges and not self._num_recalling and not self._lock.locked():
            self._index = None
            self._next = {}
            self._covered_from_ts_ms = 0
            self._covered_generation = 0
