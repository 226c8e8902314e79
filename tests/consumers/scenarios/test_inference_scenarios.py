"""The whole InferenceService driven through a transport with a fake engine.

Each scenario runs on the in-memory bus (milliseconds) and on Apache Kafka (`kafka` marker), with
the same body; the few that need fault injection run on memory only.
"""

from __future__ import annotations

import asyncio

from consumers.inference import InferenceService
from schemas import (
    CancelRequest,
    DeadLetter,
    Error,
    ErrorCode,
    Final,
    FinishReason,
    InferenceRequest,
    ReplyAddress,
    TokenChunk,
    decode,
    encode,
)
from streamer.transport import TopicPartition
from tests.consumers.scenarios.harness import WAIT_S, Bus, FakeEngine


TOKEN = "reply-token-0123456789"


def finals(records, request_id=None) -> list:
    return [r for r in records if isinstance(r, Final | Error) and request_id in (None, r.request_id)]


async def dead_letters(bus: Bus, n: int) -> list[DeadLetter]:
    records = await bus.read(bus.topics.requests_dlq, lambda rs: len(rs) >= n)
    return [decode(r.value, DeadLetter) for r in records]


async def until(predicate, timeout_s: float = WAIT_S) -> None:
    """For state with no event to wait on (readiness): check every few milliseconds."""
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.005)


def requests_tp(bus: Bus, partition: int) -> TopicPartition:
    return TopicPartition(bus.topics.requests, partition)


async def test_a_streamed_answer_is_chunked_finished_copied_and_committed(bus):
    reply = bus.reply_topic()
    await bus.create_reply_topic(reply)
    await bus.start_service(FakeEngine())
    await bus.request(InferenceRequest("r1", "one two three", reply_to=ReplyAddress(reply, 0), reply_token=TOKEN), 0)
    records = await bus.replies(reply, lambda rs: bool(finals(rs)))
    chunks = [r for r in records if isinstance(r, TokenChunk)]
    (final,) = finals(records)
    assert chunks and "".join(c.text for c in chunks) == "one two three "
    assert [c.seq for c in chunks] == list(range(len(chunks))) and final.seq == len(chunks)
    assert (final.finish_reason, final.text, final.usage.completion_tokens) == (FinishReason.LENGTH, "one two three ", 3)
    assert final.reply_token == TOKEN and final.attempt == 1  # epoch 1: the partition's first owner
    (copy,) = await bus.replies(bus.topics.results, lambda rs: len(rs) >= 1)
    assert (copy.request_id, copy.text, copy.reply_token) == ("r1", "one two three ", None)
    await bus.wait_committed(requests_tp(bus, 0), 1)


async def test_a_record_that_does_not_decode_is_dead_lettered_answered_and_committed(bus):
    reply = bus.reply_topic()
    await bus.create_reply_topic(reply)
    await bus.start_service(FakeEngine())
    salvageable = b'{"kind":"request","request_id":"bad1","prompt":5,"reply_to":{"topic":"%s","partition":0}}' % reply.encode()
    await bus.send(bus.topics.requests, salvageable, partition=0)
    await bus.send(bus.topics.requests, b"\xff not json", partition=0)
    (error,) = await bus.replies(reply, lambda rs: len(rs) >= 1)
    assert isinstance(error, Error) and error.request_id == "bad1" and error.code is ErrorCode.INVALID_REQUEST
    letters = await dead_letters(bus, 2)
    assert [(d.request_id, d.offset) for d in letters] == [("bad1", 0), (None, 1)]
    assert letters[1].code is ErrorCode.MALFORMED
    await bus.wait_committed(requests_tp(bus, 0), 2)


async def test_reply_topics_missing_or_outside_the_pattern_are_refused(bus):
    missing, outside = bus.reply_topic("missing"), f"{bus.topics.prefix}.elsewhere"
    await bus.create_reply_topic(outside)
    engine = FakeEngine()
    await bus.start_service(engine)
    await bus.request(InferenceRequest("m1", "hi", reply_to=ReplyAddress(missing, 0)), 0)
    await bus.request(InferenceRequest("o1", "hi", reply_to=ReplyAddress(outside, 0)), 0)
    results = await bus.replies(bus.topics.results, lambda rs: len(rs) >= 2)
    assert {(r.request_id, r.code) for r in results} == {
        ("m1", ErrorCode.REPLY_TOPIC_NOT_FOUND), ("o1", ErrorCode.REPLY_TOPIC_REFUSED),
    }
    assert {d.request_id for d in await dead_letters(bus, 2)} == {"m1", "o1"}
    await bus.wait_committed(requests_tp(bus, 0), 2)
    assert engine.submitted == []  # nothing was generated for either
    assert await bus.all_of(outside) == []
    async with bus.transport.admin() as admin:
        assert (await admin.describe_topic(missing))["error_code"] == 3  # still does not exist


async def test_the_same_request_twice_in_flight_is_answered_once_and_both_offsets_commit(bus):
    reply = bus.reply_topic()
    await bus.create_reply_topic(reply)
    engine = FakeEngine()
    await bus.start_service(engine)
    twice = InferenceRequest("dup", "hold on", reply_to=ReplyAddress(reply, 0))
    await bus.request(twice, 0)
    await bus.request(twice, 0)
    await bus.request(InferenceRequest("after", "next one", reply_to=ReplyAddress(reply, 0)), 0)
    await bus.replies(reply, lambda rs: bool(finals(rs, "after")))  # read after both copies of dup
    assert await bus.committed(requests_tp(bus, 0)) in (None, 0)  # nothing past the unanswered dup
    engine.release()
    records = await bus.replies(reply, lambda rs: bool(finals(rs, "dup")))
    assert len(finals(records, "dup")) == 1
    assert [r.request_id for r in engine.submitted].count("dup") == 1
    await bus.wait_committed(requests_tp(bus, 0), 3)


async def test_a_rebalance_mid_flight_re_serves_the_revoked_request_with_a_higher_attempt(bus):
    reply = bus.reply_topic()
    await bus.create_reply_topic(reply)
    first_engine = FakeEngine()
    await bus.start_service(first_engine)
    for partition in (0, 1):
        await bus.request(InferenceRequest(f"h{partition}", "hold it", reply_to=ReplyAddress(reply, 0)), partition)
    await first_engine.wait_held(2)
    second: InferenceService = await bus.start_service(FakeEngine(hold=False))
    records = await bus.replies(reply, lambda rs: any(f.served_by == "c1" for f in finals(rs)))
    (moved,) = [f for f in finals(records) if f.served_by == "c1"]
    (moved_tp,) = second.intake.consumer.assignment()
    kept_tp = requests_tp(bus, 1 - moved_tp.partition)
    assert moved.request_id == f"h{moved_tp.partition}" and isinstance(moved, Final)
    assert moved.attempt == 2  # the partition's second owner: above the first owner's attempt 1
    await bus.wait_committed(moved_tp, 1)
    assert await bus.committed(kept_tp) in (None, 0)  # its request is still unanswered


async def test_backpressure_pauses_at_max_inflight_and_resumes_below_resume_below(bus):
    engine = FakeEngine()
    service = await bus.start_service(engine, max_inflight=2, resume_below=1, max_fetch_records=1)
    for i in range(4):
        await bus.request(InferenceRequest(f"p{i}", "hold"), 0)
    await engine.wait_held(2)
    assert service.intake.paused and len(service.answers) == 2
    assert len(engine.submitted) == 2
    engine.release()
    await until(lambda: len(engine.held) == 2 and len(engine.submitted) == 4)
    engine.release()
    results = await bus.replies(bus.topics.results, lambda rs: len(rs) >= 4)
    assert sorted(r.request_id for r in results) == ["p0", "p1", "p2", "p3"]
    await bus.wait_committed(requests_tp(bus, 0), 4)
    await until(lambda: not service.intake.paused)


async def test_a_cancel_on_the_control_topic_aborts_the_request(bus):
    reply = bus.reply_topic()
    await bus.create_reply_topic(reply)
    engine = FakeEngine()
    await bus.start_service(engine)
    await bus.request(InferenceRequest("c1", "hold this", reply_to=ReplyAddress(reply, 0)), 0)
    await engine.wait_held(1)
    await bus.send(bus.topics.control, encode(CancelRequest("c1")), key=b"c1")
    (final,) = finals(await bus.replies(reply, lambda rs: bool(finals(rs))))
    assert final.finish_reason is FinishReason.CANCELLED and engine.aborted == ["c1"]
    await bus.wait_committed(requests_tp(bus, 0), 1)


async def test_a_stalled_commit_turns_readiness_false_until_it_moves(bus):
    engine = FakeEngine()
    service = await bus.start_service(engine, commit_stall_s=0.05)
    assert service.is_ready()
    await bus.request(InferenceRequest("s1", "hold"), 0)
    await engine.wait_held(1)
    await until(lambda: not service.is_ready())
    assert service.stalled_partitions == [requests_tp(bus, 0)]
    engine.release()
    await until(service.is_ready)


# Memory only: a broker cannot be told to refuse one topic's writes (ACLs need a secured broker,
# covered by tests/security) — fault injection is what the in-memory bus is for.
async def test_one_destination_not_authorized_does_not_hold_up_another(memory_bus):
    bus = memory_bus
    denied, fine = bus.reply_topic("denied"), bus.reply_topic("fine")
    for topic in (denied, fine):
        await bus.create_reply_topic(topic)
    bus.transport.deny_writes(denied)
    await bus.start_service(FakeEngine())
    await bus.request(InferenceRequest("d1", "to the denied", reply_to=ReplyAddress(denied, 0)), 0)
    await bus.request(InferenceRequest("f1", "to the fine one", reply_to=ReplyAddress(fine, 0)), 1)
    (final,) = finals(await bus.replies(fine, lambda rs: bool(finals(rs))))
    assert final.text == "to the fine one "
    results = await bus.replies(bus.topics.results, lambda rs: len(rs) >= 2)
    # the fake engine finishes before the first refused send comes back: d1's copy may be its Final
    assert sorted(r.request_id for r in results) == ["d1", "f1"]
    assert [(d.request_id, d.code) for d in await dead_letters(bus, 1)] == [("d1", ErrorCode.REPLY_NOT_AUTHORIZED)]
    assert bus.transport.records(denied) == []
    await bus.wait_committed(requests_tp(bus, 0), 1)
    await bus.wait_committed(requests_tp(bus, 1), 1)
