"""Several bases side by side: each consumer reads its base's lane, announces itself, refuses other bases.

Run on the in-memory bus and on Apache Kafka (`kafka` marker) with the same body.
"""

from __future__ import annotations

import pytest

from consumers.config import ServeConfig
from consumers.inference import InferenceService
from schemas import Error, ErrorCode, Final, InferenceRequest, ReplyAddress, encode
from streamer.catalogue import Catalogue, decode_served_base
from tests.consumers.scenarios.harness import Bus, FakeEngine

TOKEN = "reply-token-0123456789"


class NamedEngine(FakeEngine):
    """A fake engine serving a named base (the real EngineThread has `base_name` too)."""

    def __init__(self, base_name: str) -> None:
        super().__init__()
        self.base_name = base_name


def request(request_id: str, reply: str, base: str | None = None) -> InferenceRequest:
    return InferenceRequest(request_id, f"{request_id} words", reply_to=ReplyAddress(reply, 0), reply_token=TOKEN, base=base)


def last_records(records) -> dict[str, Final | Error]:
    return {r.request_id: r for r in records if isinstance(r, Final | Error)}


async def test_each_base_reads_its_own_lane_and_a_foreign_base_is_refused_uncomputed(bus: Bus):
    reply = bus.reply_topic()
    await bus.create_reply_topic(reply)
    alpha, beta = NamedEngine("alpha"), NamedEngine("beta")
    await bus.start_service(alpha, base_lane=True)
    await bus.start_service(beta, base_lane=True)
    lane_a, lane_b = bus.topics.requests_for("alpha"), bus.topics.requests_for("beta")
    await bus.send(lane_a, encode(request("a1", reply, base="alpha")), key=b"a1")
    await bus.send(lane_a, encode(request("a2", reply)), key=b"a2")  # no base: this lane's
    await bus.send(lane_b, encode(request("b1", reply, base="beta")), key=b"b1")
    await bus.send(lane_a, encode(request("x1", reply, base="beta")), key=b"x1")  # beta's, on alpha's lane
    answers = last_records(await bus.replies(reply, lambda rs: len(last_records(rs)) >= 4))

    assert {r for r, a in answers.items() if isinstance(a, Final)} == {"a1", "a2", "b1"}
    refused = answers["x1"]
    assert isinstance(refused, Error) and refused.code is ErrorCode.BASE_NOT_SERVED
    assert sorted(r.request_id for r in alpha.submitted) == ["a1", "a2"]  # x1 never reached the engine
    assert [r.request_id for r in beta.submitted] == ["b1"]


async def test_a_default_topic_consumer_serves_its_base_and_none_and_refuses_another(bus: Bus):
    reply = bus.reply_topic()
    await bus.create_reply_topic(reply)
    engine = NamedEngine("alpha")
    await bus.start_service(engine)  # base_lane False: <prefix>.requests, as one base alone
    for rid, base in (("n1", None), ("s1", "alpha"), ("o1", "gamma")):
        await bus.request(request(rid, reply, base=base))
    answers = last_records(await bus.replies(reply, lambda rs: len(last_records(rs)) >= 3))
    assert isinstance(answers["n1"], Final) and isinstance(answers["s1"], Final)
    assert isinstance(answers["o1"], Error) and answers["o1"].code is ErrorCode.BASE_NOT_SERVED
    assert "gamma" in answers["o1"].message
    assert sorted(r.request_id for r in engine.submitted) == ["n1", "s1"]


async def test_consumers_announce_their_lane_in_the_catalogue_and_leave_a_tombstone(bus: Bus):
    await bus.start_service(NamedEngine("alpha"), base_lane=True)
    await bus.start_service(NamedEngine("beta"))
    records = await bus.read(bus.topics.catalogue, lambda rs: len({r.key for r in rs}) >= 2)
    entries = {e.base: e for e in (decode_served_base(r.value) for r in records)}
    assert entries["alpha"].requests_topic == bus.topics.requests_for("alpha")
    assert entries["alpha"].group_id == f"{bus.group_id}.alpha"
    assert (entries["beta"].requests_topic, entries["beta"].group_id) == (bus.topics.requests, bus.group_id)
    assert entries["alpha"].consumer == "c0" and entries["alpha"].engine_version

    catalogue = Catalogue()
    for record in records:
        catalogue.apply(record.key, record.value)
    now_ms = max(e.sent_ms for e in entries.values())
    assert catalogue.lanes("alpha", now_ms) == [bus.topics.requests_for("alpha")]
    assert catalogue.lanes("gamma", now_ms) == []

    await bus.stop_services()
    bus.services.clear()
    records = await bus.all_of(bus.topics.catalogue)
    for record in records:
        catalogue.apply(record.key, record.value)
    assert sum(r.value is None for r in records) == 2  # one tombstone per consumer that stopped
    assert catalogue.num_entries == 0 and catalogue.lanes("alpha", now_ms) == []


async def test_a_lane_needs_a_base_name_a_topic_can_carry(bus: Bus):
    config = ServeConfig(group_id=bus.group_id, base_lane=True)
    with pytest.raises(ValueError, match="base name"):
        InferenceService(bus.transport, bus.topics, config, FakeEngine())  # no name at all
    with pytest.raises(ValueError, match="cannot name a topic"):
        InferenceService(bus.transport, bus.topics, config, NamedEngine("org/model"))
