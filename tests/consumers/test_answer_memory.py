"""The answer memory: its bounded index, the records that answer again, and the look-back's bounds."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from aiokafka.errors import TopicAuthorizationFailedError

from consumers.config import ServeConfig
from consumers.inference.answer_memory import AnswerIndex, AnswerMemory, resend_records
from schemas import Error, ErrorCode, Final, FinishReason, InferenceRequest, TokenChunk, encode
from streamer.replies import ReplyDedup
from streamer.transport import OffsetAndMetadata, TopicPartition
from streamer.transport.memory import MemoryTransport

RESULTS = "t.results"
REQUESTS = TopicPartition("t.requests", 0)
TOKEN = "reply-token-0123456789"


def final(request_id: str, attempt: int = 1, seq: int = 2, text: str = "one two ") -> Final:
    return Final(request_id, attempt, seq, FinishReason.LENGTH, text, served_by="c0")


# ---- AnswerIndex ----------------------------------------------------------------------------------


def test_the_index_keeps_the_latest_record_of_a_key_and_forgets_a_tombstoned_one():
    index = AnswerIndex(max_bytes=10_000)
    index.put(b"a", encode(final("a", attempt=1)))
    index.put(b"a", encode(final("a", attempt=2)))
    index.put(b"b", encode(final("b")))
    index.put(b"b", None)
    assert len(index) == 1 and index.take("b") is None
    assert index.take("a").attempt == 2
    assert index.take("a") is None and index.num_bytes == 0  # handed out once


def test_the_index_stops_keeping_at_its_byte_bound():
    one = encode(final("a"))
    index = AnswerIndex(max_bytes=len(one) * 2)
    assert index.put(b"a", one) and index.put(b"b", encode(final("b")))
    assert not index.put(b"c", encode(final("c"))) and index.is_full
    assert index.num_bytes <= index.max_bytes and index.take("c") is None


@pytest.mark.parametrize(
    "key, value",
    [
        (b"a", b"\xff not json"),  # does not decode
        (b"a", encode(final("other"))),  # a record whose request is not its key's
        (b"a", encode(TokenChunk("a", 1, 0, "x"))),  # not the last record of an answer
    ],
)
def test_the_index_hands_out_only_a_final_or_error_of_the_request_asked_for(key, value):
    index = AnswerIndex(max_bytes=10_000)
    index.put(key, value)
    assert index.take("a") is None


# ---- resend_records through the client's dedup --------------------------------------------------


def first_attempt_records() -> list:
    """What the first owner sent for a streamed request: two chunks, then the Final."""
    return [
        TokenChunk("r", 1, 0, "one ", [1], reply_token=TOKEN),
        TokenChunk("r", 1, 1, "two ", [2], reply_token=TOKEN),
        msgspec.structs.replace(final("r"), reply_token=TOKEN),
    ]


@pytest.mark.parametrize("seen", [0, 1, 2, 3])  # records of the first attempt the client got before the crash
@pytest.mark.parametrize("attempt", [2, 1])  # the re-serving owner's attempt (1: no new epoch could be claimed)
def test_an_answer_sent_again_completes_the_clients_answer_once(seen, attempt):
    request = InferenceRequest("r", "p", stream=True, reply_token=TOKEN)
    on_record = msgspec.structs.replace(first_attempt_records()[-1], reply_token=None)  # the results copy
    dedup = ReplyDedup()
    delivered = [fresh for r in first_attempt_records()[:seen] if (fresh := dedup.accept(r)) is not None]
    again = resend_records(on_record, attempt, request)
    delivered += [fresh for r in again if (fresh := dedup.accept(r)) is not None]
    finals = [r for r in delivered if isinstance(r, Final)]
    assert len(finals) == 1 and finals[0].text == "one two " and finals[0].reply_token == TOKEN
    assert all(r.reply_token == TOKEN for r in again)
    if attempt == 2:  # under a new attempt the streamed text is completed, never repeated
        assert "".join(r.text for r in delivered if isinstance(r, TokenChunk)) == "one two "


def test_an_error_on_record_is_sent_again_as_it_is():
    request = InferenceRequest("r", "p", reply_token=TOKEN)
    error = Error("r", 1, 0, ErrorCode.EXPIRED, "deadline passed")
    (again,) = resend_records(error, 3, request)
    assert (again.code, again.attempt, again.seq, again.reply_token) == (ErrorCode.EXPIRED, 3, 0, TOKEN)


# ---- the look-back ----------------------------------------------------------------------------


class Group:
    """The group member's answers the memory asks for at a takeover."""

    def __init__(self, transport: MemoryTransport, committed: int | None) -> None:
        self._transport, self._committed = transport, committed

    async def committed(self, tps):
        return {tp: None if self._committed is None else OffsetAndMetadata(self._committed) for tp in tps}

    async def beginning_offsets(self, tps):
        return {tp: 0 for tp in tps}

    async def end_offsets(self, tps):
        return {tp: self._transport.logs.end_offset(tp) for tp in tps}


def bus() -> MemoryTransport:
    transport = MemoryTransport()
    transport.create_topic(REQUESTS.topic, 1)
    transport.create_topic(RESULTS, 3)
    return transport


def answer(transport: MemoryTransport, request_id: str) -> None:
    transport.append(RESULTS, encode(final(request_id)), request_id.encode(), None)


def request(transport: MemoryTransport, request_id: str):
    return transport.append(REQUESTS.topic, encode(InferenceRequest(request_id, "p")), request_id.encode(), None)


async def take_over(memory: AnswerMemory, transport: MemoryTransport, committed: int | None = None) -> None:
    memory.assigned([REQUESTS])
    await memory.taken_over(Group(transport, committed), [REQUESTS])
    records = transport.logs.read(REQUESTS, committed or 0, 1000)
    memory.polled(REQUESTS, records)


async def recall(memory: AnswerMemory, offset: int, request_id: str):
    pending = memory.recall(REQUESTS, offset, request_id)
    return None if pending is None else await pending


async def test_the_look_back_starts_at_the_first_re_served_records_time_less_the_margin():
    transport = bus()
    answer(transport, "old")  # answered before the oldest re-served request was written
    await asyncio.sleep(0.003)  # record timestamps are milliseconds
    request(transport, "old")
    request(transport, "new")
    answer(transport, "new")
    memory = AnswerMemory(transport, RESULTS, ServeConfig(answer_lookback_margin_ms=0))
    await take_over(memory, transport)
    assert await recall(memory, 1, "new") is not None
    assert await recall(memory, 0, "old") is None  # before the look-back: computed again
    assert memory.num_read == 1
    wide = AnswerMemory(transport, RESULTS, ServeConfig(answer_lookback_margin_ms=60_000))
    await take_over(wide, transport)
    assert await recall(wide, 0, "old") is not None and wide.num_read == 2
    await memory.close()
    await wide.close()


async def test_the_look_back_reads_at_most_its_record_bound():
    transport = bus()
    names = [f"r{i}" for i in range(6)]
    for name in names:
        request(transport, name)
        answer(transport, name)
    memory = AnswerMemory(transport, RESULTS, ServeConfig(answer_lookback_max_records=2))
    await take_over(memory, transport)
    found = [name for offset, name in enumerate(names) if await recall(memory, offset, name) is not None]
    assert memory.num_read == 2 and len(found) == 2
    await memory.close()


async def test_only_records_present_at_the_takeover_past_the_committed_offset_are_looked_up():
    transport = bus()
    for name in ("a", "b"):
        request(transport, name)
        answer(transport, name)
    memory = AnswerMemory(transport, RESULTS, ServeConfig())
    await take_over(memory, transport, committed=2)  # no lag: nothing is re-served, nothing read
    assert memory.recall(REQUESTS, 1, "b") is None and memory.num_read == 0
    memory.forget([REQUESTS])
    await take_over(memory, transport, committed=1)
    later = request(transport, "a")  # the same request again after the takeover: new, computed
    assert memory.recall(REQUESTS, later.offset, "a") is None
    assert await recall(memory, 1, "b") is not None
    await memory.close()


async def test_the_index_is_dropped_once_the_re_served_records_are_passed_or_revoked():
    transport = bus()
    for name in ("a", "b"):
        request(transport, name)
        answer(transport, name)
    memory = AnswerMemory(transport, RESULTS, ServeConfig())
    await take_over(memory, transport)
    assert await recall(memory, 0, "a") is not None
    assert memory.num_answers == 1  # "b" is still to come
    memory.passed(REQUESTS, 1)
    assert memory.num_answers == 0 and memory.recall(REQUESTS, 1, "b") is None


async def test_reuse_switched_off_never_reads_the_results_topic():
    transport = bus()
    request(transport, "a")
    answer(transport, "a")
    memory = AnswerMemory(transport, RESULTS, ServeConfig(reuse_answers=False))
    await take_over(memory, transport)
    assert memory.recall(REQUESTS, 0, "a") is None and memory.num_read == 0


@pytest.mark.parametrize(
    "field, value",
    [
        ("answer_lookback_margin_ms", -1),
        ("answer_lookback_max_records", 0),
        ("answer_lookback_max_s", 0),
        ("answer_memory_max_bytes", 0),
    ],
)
def test_look_back_bounds_are_validated(field, value):
    with pytest.raises(ValueError, match=field):
        ServeConfig(**{field: value})


async def test_a_look_back_the_broker_refuses_leaves_the_request_to_be_computed():
    class NoReadTransport(MemoryTransport):
        def reader(self, topic):
            reader = super().reader(topic)

            async def refused():
                raise TopicAuthorizationFailedError(topic)

            reader.start = refused
            return reader

    transport = NoReadTransport()
    transport.create_topic(REQUESTS.topic, 1)
    transport.create_topic(RESULTS, 1)
    request(transport, "a")
    answer(transport, "a")
    memory = AnswerMemory(transport, RESULTS, ServeConfig())
    await take_over(memory, transport)
    assert await recall(memory, 0, "a") is None
