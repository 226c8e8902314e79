"""The catalogue's bookkeeping, lane topic names, per-lane routing and the model listing (no broker)."""

from __future__ import annotations

import msgspec
import pytest

from consumers.config import ServeConfig
from schemas import AdapterEvent, encode
from streamer import TopicNames
from streamer.catalogue import (
    MAX_ANNOUNCED_ADAPTERS,
    Catalogue,
    ServedBase,
    Tier,
    decode_served_base,
    encode_served_base,
)
from streamer.model_listing import RegistryReader, list_adapters, list_bases
from streamer.routing import RouteTable, RoutingConfig, TrafficReport, encode_report

TOPICS = TopicNames("ls")


def entry(consumer: str, base: str, sent_ms: int, topic: str | None = None, **fields) -> ServedBase:
    return ServedBase(
        consumer=consumer, base=base, requests_topic=topic or TOPICS.requests_for(base), group_id=f"g.{base}",
        engine_version="0.1", sent_ms=sent_ms, **fields,
    )


def applied(*entries: ServedBase, max_age_ms: int = 1000) -> Catalogue:
    catalogue = Catalogue(max_age_ms=max_age_ms)
    for e in entries:
        catalogue.apply(e.consumer.encode(), encode_served_base(e))
    return catalogue


# ---- topic names and the consumer's lane -------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "topic"),
    [("tiny-llama", "ls.requests.base.tiny-llama"), ("Qwen2.5_0.5B", "ls.requests.base.Qwen2.5_0.5B"),
     ("dlq", "ls.requests.base.dlq")],  # never the dead-letter topic
)
def test_a_lane_topic_is_under_the_lanes_prefix(base, topic):
    assert TOPICS.requests_for(base) == topic and topic.startswith(TOPICS.lanes_prefix)
    assert topic != TOPICS.requests_dlq and not TOPICS.requests_dlq.startswith(TOPICS.lanes_prefix)


@pytest.mark.parametrize("base", ["", "org/model", "a:b", "x y", "..", "n" * 250])
def test_a_base_name_a_topic_cannot_carry_is_refused(base):
    with pytest.raises(ValueError, match="cannot name a topic"):
        TOPICS.requests_for(base)


@pytest.mark.parametrize(
    ("base_lane", "topic", "group"),
    [(False, "ls.requests", "inf"), (True, "ls.requests.base.alpha", "inf.alpha")],
)
def test_serve_config_names_the_lane(base_lane, topic, group):
    config = ServeConfig(group_id="inf", base_lane=base_lane)
    assert (config.requests_topic(TOPICS, "alpha"), config.consumer_group("alpha")) == (topic, group)


def test_a_lane_without_a_base_name_is_refused():
    with pytest.raises(ValueError, match="base name"):
        ServeConfig(base_lane=True).requests_topic(TOPICS, None)
    assert ServeConfig().requests_topic(TOPICS, None) == TOPICS.requests  # one base alone needs no name


# ---- the catalogue table -----------------------------------------------------------------------


def test_lanes_come_from_live_announcements_only():
    catalogue = applied(
        entry("a1", "alpha", 1000), entry("a2", "alpha", 1000), entry("b1", "beta", 100),
        entry("d1", "alpha", 1000, topic=TOPICS.requests),
    )
    assert catalogue.lanes("alpha", 1500) == [TOPICS.requests_for("alpha"), TOPICS.requests]  # most consumers first
    assert catalogue.lanes("beta", 1100) == [TOPICS.requests_for("beta")]
    assert catalogue.lanes("beta", 1101) == []  # stale: crashed without a tombstone
    assert catalogue.lanes("gamma", 1000) == []


def test_an_announcement_dated_far_ahead_is_not_live():
    catalogue = applied(entry("a1", "alpha", 10_000_000))  # a clock (or a forger) far in the future
    assert catalogue.lanes("alpha", 1000) == [] and catalogue.lanes("alpha", 9_999_500) != []


def test_a_tombstone_forgets_a_consumer_and_a_new_announcement_replaces_the_old():
    catalogue = applied(entry("a1", "alpha", 1000))
    catalogue.apply(b"a1", encode_served_base(entry("a1", "beta", 1001)))  # the consumer now serves beta
    assert catalogue.lanes("alpha", 1001) == [] and catalogue.lanes("beta", 1001) == [TOPICS.requests_for("beta")]
    catalogue.apply(b"a1", None)
    assert catalogue.num_entries == 0 and catalogue.lanes("beta", 1001) == []


def test_bases_lists_live_stale_and_registry_only_bases():
    catalogue = applied(entry("a1", "alpha", 1000), entry("b1", "beta", 0))
    listings = {b.base: b for b in catalogue.bases(1001, also=["gamma", "alpha"])}
    assert sorted(listings) == ["alpha", "beta", "gamma"]
    assert [listings[n].is_live for n in ("alpha", "beta", "gamma")] == [True, False, False]
    assert [c.consumer for c in listings["alpha"].consumers] == ["a1"] and listings["gamma"].consumers == ()


def test_tier_is_the_best_a_live_consumer_of_the_base_holds():
    catalogue = applied(
        entry("a1", "alpha", 1000, adapter_tiers={"x": Tier.HOST}),
        entry("a2", "alpha", 1000, adapter_tiers={"x": Tier.DEVICE, "y": Tier.HOST}),
        entry("b1", "beta", 1000, adapter_tiers={"z": Tier.DEVICE}),
    )
    assert catalogue.tier("alpha", "x", 1000) is Tier.DEVICE
    assert catalogue.tier("alpha", "z", 1000) is None  # beta's consumer holds it, not alpha's
    assert catalogue.tier(None, "z", 1000) is Tier.DEVICE
    assert catalogue.tier("alpha", "x", 5000) is None  # nobody live


@pytest.mark.parametrize(
    "change",
    [
        {"consumer": "bad name!"}, {"base": "x y"}, {"requests_topic": "a/b"}, {"sent_ms": -1},
        {"max_model_len": 2**31}, {"architecture": "a" * 65}, {"engine_version": ""},
        {"adapter_tiers": {"x": "disk"}}, {"adapter_tiers": {"../x": "host"}},
        {"adapter_tiers": {f"a{i}": "host" for i in range(MAX_ANNOUNCED_ADAPTERS + 1)}},
    ],
)
def test_an_announcement_outside_the_bounds_is_refused_and_counted(change):
    body = {**msgspec.to_builtins(entry("a1", "alpha", 1000)), **change}
    catalogue = Catalogue()
    with pytest.raises(msgspec.ValidationError):
        catalogue.apply(b"a1", msgspec.json.encode(body))
    assert (catalogue.num_rejected, catalogue.num_entries) == (1, 0)


def test_an_announcement_keyed_as_another_consumer_is_refused():
    catalogue = Catalogue()
    with pytest.raises(ValueError, match="keyed"):
        catalogue.apply(b"victim", encode_served_base(entry("a1", "alpha", 1000)))
    assert catalogue.num_entries == 0


def test_a_flood_of_consumer_names_keeps_the_newest_within_the_bound():
    catalogue = Catalogue(max_entries=3)
    for i in range(10):
        catalogue.apply(f"c{i}".encode(), encode_served_base(entry(f"c{i}", "alpha", i)))
    assert catalogue.num_entries == 3
    assert [c.consumer for c in catalogue.live(9)] == ["c7", "c8", "c9"]


def test_encoding_round_trips():
    e = entry("a1", "alpha", 5, architecture="llama", quantization="nf4", max_model_len=2048,
              adapter_tiers={"x": Tier.DEVICE})
    assert decode_served_base(encode_served_base(e)) == e


# ---- routing per lane --------------------------------------------------------------------------


def _report(consumer: str, partitions: int, rates: dict[str, float], topic: str | None) -> bytes:
    return encode_report(TrafficReport(consumer, 1000, partitions, sum(rates.values()), rates, requests_topic=topic))


def test_each_lane_is_routed_from_its_own_consumers_reports():
    table = RouteTable(RoutingConfig(), rebuild_ms=0)
    lane = TOPICS.requests_for("beta")
    table.apply(b"a", _report("a", 64, {"hot": 100.0}, None))  # the default topic: 64 partitions
    table.apply(b"b", _report("b", 2, {"other": 100.0}, lane))  # beta's lane: 2 partitions
    assert table.partition_for("hot", "r1", 1000) is not None  # hot on the default topic
    assert table.partition_for("hot", "r1", 1000, lane) is None  # not hot in beta's lane: by key
    picks = {table.partition_for("other", f"r{i}", 1000, lane) for i in range(200)}
    assert picks <= {0, 1}  # never a partition the lane does not have


# ---- the listing -------------------------------------------------------------------------------


def _registry(*events: AdapterEvent) -> list[AdapterEvent]:
    reader = RegistryReader(transport=None, topic="unused", max_adapters=3)
    for event in events:
        reader.on_record(event.adapter_id.encode(), encode(event), 0)
    return list(reader.events.values())


def test_adapters_are_listed_with_their_base_liveness_and_tier():
    catalogue = applied(
        entry("a1", "alpha", 1000, adapter_tiers={"alpha/x": Tier.HOST}),
        entry("d1", "delta", 1000, topic=TOPICS.requests),
    )
    registry = _registry(
        AdapterEvent("alpha/x", 2, "", base_model="alpha"), AdapterEvent("beta/y", 1, "", base_model="beta"),
        AdapterEvent("plain", 1, ""),
    )
    listed = {a.adapter_id: a for a in list_adapters(catalogue, registry, TOPICS.requests, 1000)}
    assert (listed["alpha/x"].is_live, listed["alpha/x"].tier, listed["alpha/x"].version) == (True, Tier.HOST, 2)
    assert (listed["beta/y"].is_live, listed["beta/y"].tier) == (False, None)
    assert listed["plain"].is_live  # no base named: the default topic's consumer serves it
    assert [a.adapter_id for a in list_adapters(catalogue, registry, TOPICS.requests, 1000, base="beta")] == ["beta/y"]
    bases = {b.base: b.is_live for b in list_bases(catalogue, registry, 1000)}
    assert bases == {"alpha": True, "beta": False, "delta": True}


def test_the_registry_reader_applies_deletes_and_bounds_the_ids():
    reader = RegistryReader(transport=None, topic="unused", max_adapters=2)
    for event in (AdapterEvent("a", 1, ""), AdapterEvent("b", 1, ""), AdapterEvent("c", 1, "")):
        reader.on_record(event.adapter_id.encode(), encode(event), 0)
    assert sorted(reader.events) == ["a", "b"]  # c is past the bound
    reader.on_record(b"a", encode(AdapterEvent("a", 1, "", deleted=True)), 0)
    reader.on_record(b"b", None, 0)
    reader.on_record(b"x", b"not json", 0)
    reader.on_record(b"other", encode(AdapterEvent("c", 1, "")), 0)  # keyed as another id
    assert reader.events == {} and reader.num_rejected == 2


# ---- the client against a broker ---------------------------------------------------------------


@pytest.mark.kafka
async def test_a_client_refuses_a_base_nobody_serves_at_once_even_without_a_catalogue_topic(kafka_config, topic_names):
    """A deployment older than the catalogue (no such topic): the client still starts, and a request
    naming a base fails with base_not_served within a second instead of waiting for an answer."""
    import time

    from schemas import ErrorCode
    from streamer import LoraClient, RequestFailed, list_topics

    async with LoraClient(config=kafka_config, topics=topic_names) as client:
        assert topic_names.catalogue not in await list_topics(kafka_config)
        started = time.monotonic()
        with pytest.raises(RequestFailed) as refused:
            await client.generate("hello", base="alpha", timeout_s=30)
        assert refused.value.code is ErrorCode.BASE_NOT_SERVED and time.monotonic() - started < 1.0
        assert client.num_waiting == 0
