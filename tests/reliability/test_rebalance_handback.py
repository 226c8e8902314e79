"""A partition revoked and handed back while its old answers are still in flight (issue 20, §6),
on the in-memory bus and through Apache Kafka.

The exact interleaving (an old answer acknowledged after the hand-back, while the refetch has not
reached its offset) is table-tested in tests/streamer/test_offsets.py; here the whole service goes
through a real rebalance: the old answers finish in reverse order, and the commit never passes an
offset whose request is unanswered; and a service paused at max_inflight stays paused across the
rebalance (a broker forgets a consumer's pauses when it reassigns partitions)."""

from __future__ import annotations

import asyncio

from schemas import Final, InferenceRequest, ReplyAddress
from streamer import TopicSpec
from streamer.transport import TopicPartition
from tests.consumers.scenarios.conftest import bus  # noqa: F401  (the memory + Kafka fixture)
from tests.consumers.scenarios.harness import WAIT_S, Bus, FakeEngine, _answer

HELD = ("r0", "r1", "r2")  # offsets 0, 1, 2 of partition 0


class OneByOneEngine(FakeEngine):
    def release_one(self, request_id: str) -> None:
        _answer(request_id, "released answer", self.held.pop(request_id))


class NoListener:
    async def on_revoked(self, partitions) -> None:
        pass

    async def on_assigned(self, partitions) -> None:
        pass


def finals_of(records) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in records:
        if isinstance(record, Final):
            counts[record.request_id] = counts.get(record.request_id, 0) + 1
    return counts


async def rebalance_by_a_foreign_member(bus: Bus, service) -> object:
    """A member of the service's group that reads another topic joins: the group rebalances, and
    every requests partition is revoked from the service and handed back to it (its only reader)."""
    assignments: list[list[TopicPartition]] = []
    on_assigned = service.intake.on_assigned

    async def counted(partitions):
        await on_assigned(partitions)
        assignments.append(list(partitions))

    service.intake.on_assigned = counted
    other = f"{bus.topics.prefix}.other"
    await bus.transport.ensure_topics([TopicSpec(other, 1)])
    member = bus.transport.group_consumer([other], group_id=bus.group_id, listener=NoListener())
    await member.start()
    async with asyncio.timeout(WAIT_S):
        while not (member.assignment() and assignments):
            await member.poll(timeout_ms=50)
    assert assignments[-1] == [TopicPartition(bus.topics.requests, 0)]  # handed back
    return member


async def test_a_handed_back_partition_never_commits_past_an_unanswered_offset(bus, report_counts):
    reply = bus.reply_topic()
    await bus.create_reply_topic(reply)
    engine = OneByOneEngine()
    service = await bus.start_service(engine, request_partitions=1)
    tp = TopicPartition(bus.topics.requests, 0)
    for request_id in HELD:
        await bus.request(InferenceRequest(request_id, "hold it", reply_to=ReplyAddress(reply, 0)), 0)
    await engine.wait_held(3)
    member = await rebalance_by_a_foreign_member(bus, service)
    seen_commits: list[int | None] = []
    try:
        for n, request_id in enumerate(reversed(HELD)):  # the newest old answer first
            engine.release_one(request_id)
            await bus.replies(reply, lambda rs, k=n + 1: len(finals_of(rs)) >= k)
            await asyncio.sleep(20 * service.config.commit_interval_ms / 1000.0)  # commit rounds pass
            seen_commits.append(await bus.committed(tp))
            if request_id != "r0":  # r0, at offset 0, is unanswered: nothing may be committed
                assert seen_commits[-1] in (None, 0), seen_commits
        await bus.request(InferenceRequest("good", "good traffic", reply_to=ReplyAddress(reply, 0)), 0)
        while engine.held:  # re-served copies (attempt 2) are answered too
            engine.release()
            await asyncio.sleep(0.05)
        records = await bus.replies(reply, lambda rs: "good" in finals_of(rs))
        await bus.wait_committed(tp, 4)
    finally:
        await member.stop()
    answered = finals_of(records)
    report_counts(
        f"revoked and handed back ({bus.kind}): commits seen while old answers finished newest first "
        f"{seen_commits}; answered {sorted(answered)}; Finals per request {sorted(set(answered.values()))}"
    )
    assert set(answered) == {*HELD, "good"}


async def test_a_paused_service_stays_paused_across_a_rebalance(bus, report_counts):
    engine = FakeEngine()
    service = await bus.start_service(engine, request_partitions=1, max_inflight=2, resume_below=1)
    for request_id in ("p0", "p1"):
        await bus.request(InferenceRequest(request_id, "hold it"), 0)
    await engine.wait_held(2)
    await asyncio.sleep(0.1)  # the next poll round applies backpressure
    assert service.intake.paused
    member = await rebalance_by_a_foreign_member(bus, service)
    try:
        for n in range(5):
            await bus.request(InferenceRequest(f"q{n}", "quick one"), 0)
        await asyncio.sleep(1.0)  # poll rounds pass: nothing past max_inflight may be admitted
        admitted_while_paused = len({r.request_id for r in engine.submitted})
        engine.release()
        results = await bus.replies(bus.topics.results, lambda rs: len(finals_of(rs)) >= 7)
    finally:
        await member.stop()
    report_counts(
        f"paused across a rebalance ({bus.kind}): {admitted_while_paused} requests admitted at max_inflight 2 "
        f"with 5 more waiting; then {len(finals_of(results))} answered"
    )
    assert admitted_while_paused == 2
    assert set(finals_of(results)) == {"p0", "p1", *(f"q{n}" for n in range(5))}

