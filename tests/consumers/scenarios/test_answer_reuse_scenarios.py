"""Effectively-once answers: a request answered before a crash, whose offset was not committed, is
answered again from the results topic by the next owner of its partition, not computed again.

Each scenario runs on the in-memory bus and on Apache Kafka (`kafka` marker).
"""

from __future__ import annotations

import asyncio

from consumers.inference import InferenceService
from schemas import Final, InferenceRequest, ReplyAddress, TokenChunk
from streamer.replies import ReplyDedup
from streamer.transport import TopicPartition
from tests.consumers.scenarios.harness import WAIT_S, Bus, FakeEngine

TOKEN = "reply-token-0123456789"
NEVER_MS = 600_000.0  # a commit interval no scenario reaches: only the first (empty) round commits


async def crash(bus: Bus, service: InferenceService) -> None:
    """Stop `service` as a SIGKILL would leave things: nothing more answered, nothing more committed
    (its group membership ends, so the next member takes its partitions at once)."""

    async def no_commit() -> None:
        pass

    service.intake.commit = no_commit
    service.admission.abort_all = lambda: None  # held requests stay unanswered, as in a dead process
    service.stop()
    (task,) = [task for s, task in bus.services if s is service]
    await asyncio.wait_for(task, WAIT_S)


def client_view(records, request_id: str) -> list:
    """What a client's ReplyDedup delivers of one request's reply records, in order."""
    dedup = ReplyDedup()
    return [fresh for r in records if r.request_id == request_id and (fresh := dedup.accept(r)) is not None]


def reused(service: InferenceService) -> float:
    return service.metrics.registry.get_sample_value("lorastream_reused_answers_total")


async def test_an_answered_uncommitted_request_is_answered_from_the_results_topic_not_computed(bus):
    reply = bus.reply_topic()
    await bus.create_reply_topic(reply)
    first = await bus.start_service(FakeEngine(), commit_interval_ms=NEVER_MS)
    address = ReplyAddress(reply, 0)
    await bus.request(InferenceRequest("done", "one two three", reply_to=address, reply_token=TOKEN), 0)
    await bus.request(InferenceRequest("open", "hold it", reply_to=address, reply_token=TOKEN), 0)
    await bus.replies(bus.topics.results, lambda rs: any(r.request_id == "done" for r in rs))
    await crash(bus, first)
    assert await bus.committed(TopicPartition(bus.topics.requests, 0)) in (None, 0)  # both are re-served

    engine = FakeEngine(hold=False)
    second = await bus.start_service(engine)
    records = await bus.replies(reply, lambda rs: any(isinstance(r, Final) and r.request_id == "open" for r in rs))
    await bus.wait_committed(TopicPartition(bus.topics.requests, 0), 2)

    assert [r.request_id for r in engine.submitted] == ["open"]  # the answered one never reached the engine
    assert reused(second) == 1
    done = [r for r in records if r.request_id == "done"]
    resent = [r for r in done if r.attempt == 2]
    assert [type(r) for r in resent] == [TokenChunk, Final]  # the same answer, under the new attempt
    assert resent[-1].served_by == "c0" and resent[-1].text == "one two three " and resent[-1].reply_token == TOKEN
    delivered = client_view(records, "done")  # exactly one Final and the text once
    assert [type(r) for r in delivered if isinstance(r, Final)] == [Final]
    assert "".join(r.text for r in delivered if isinstance(r, TokenChunk)) == delivered[-1].text == "one two three "
    results = await bus.all_of(bus.topics.results)
    assert [r.key for r in results].count(b"done") == 1  # its results copy was not written again
    assert [r.key for r in results].count(b"open") == 1


async def test_a_re_served_request_with_no_answer_on_record_is_computed(bus):
    reply = bus.reply_topic()
    await bus.create_reply_topic(reply)
    first_engine = FakeEngine()
    first = await bus.start_service(first_engine, commit_interval_ms=NEVER_MS)
    await bus.request(InferenceRequest("held", "hold on", reply_to=ReplyAddress(reply, 0), reply_token=TOKEN), 1)
    await first_engine.wait_held(1)
    await crash(bus, first)

    engine = FakeEngine(hold=False)
    second = await bus.start_service(engine)
    records = await bus.replies(reply, lambda rs: any(isinstance(r, Final) for r in rs))
    assert [r.request_id for r in engine.submitted] == ["held"]
    assert reused(second) == 0
    (final,) = [r for r in records if isinstance(r, Final)]
    assert (final.attempt, final.served_by) == (2, "c1")
    await bus.wait_committed(TopicPartition(bus.topics.requests, 1), 1)


async def test_an_answer_on_record_for_another_record_with_the_same_id_is_not_reused(bus):
    """Reuse is for the very record answered before. A second tenant who takes an answered
    request_id gets its own answer computed, and that answer, the latest on the compacted results
    topic under the id, must never be handed to the first requester when its record is re-served."""
    victim_reply, thief_reply = bus.reply_topic("victim"), bus.reply_topic("thief")
    await bus.create_reply_topic(victim_reply)
    await bus.create_reply_topic(thief_reply)
    first = await bus.start_service(FakeEngine(), commit_interval_ms=NEVER_MS)
    victim = InferenceRequest("secret", "the victim's words", reply_to=ReplyAddress(victim_reply, 0), reply_token=TOKEN)
    await bus.request(victim, 0)
    await bus.replies(victim_reply, lambda rs: any(isinstance(r, Final) for r in rs))
    await bus.request(InferenceRequest("secret", "forged words", reply_to=ReplyAddress(thief_reply, 0)), 0)
    await bus.replies(bus.topics.results, lambda rs: any(getattr(r, "text", "") == "forged words " for r in rs))
    await crash(bus, first)  # neither offset committed: both records are re-served

    second = await bus.start_service(FakeEngine(hold=False))
    records = await bus.replies(victim_reply, lambda rs: any(isinstance(r, Final) and r.attempt == 2 for r in rs))
    (again,) = [r for r in records if isinstance(r, Final) and r.attempt == 2]
    assert again.text == "the victim's words "  # computed again, not the thief's answer on record
    assert all(getattr(r, "text", "") != "forged words " for r in records)
    assert reused(second) == 0
