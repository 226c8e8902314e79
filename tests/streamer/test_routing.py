"""Routing under skew (streamer.routing): table tests, milliseconds, no broker."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from aiokafka.partitioner import DefaultPartitioner

from streamer.request_builder import BASE_MODEL_KEY
from streamer.routing import (
    RoutePlan,
    RouteTable,
    RoutingConfig,
    TrafficReport,
    encode_report,
    home_partition,
    merge_shares,
    plan_routes,
)


def zipf_shares(num_adapters: int, s: float = 1.1) -> dict[str, float]:
    weights = [(rank + 1) ** -s for rank in range(num_adapters)]
    total = sum(weights)
    return {f"team{rank}/task": w / total for rank, w in enumerate(weights)}


def partition_loads(plan: RoutePlan, shares: dict[str, float]) -> list[float]:
    load = [0.0] * plan.num_partitions
    for key, share in shares.items():
        pieces = plan.spread.get(key) or ((home_partition(key, plan.num_partitions), share),)
        for partition, weight in pieces:
            load[partition] += weight
    return load


@pytest.mark.parametrize("key", ["acme/sentiment", BASE_MODEL_KEY, "a", "x" * 128])
@pytest.mark.parametrize("num_partitions", [1, 7, 64])
def test_home_is_kafkas_default_partitioner(key, num_partitions):
    every = list(range(num_partitions))
    assert home_partition(key, num_partitions) == DefaultPartitioner()(key.encode(), every, every)


# P = 4: C = 1.1 / 4 = 0.275, hot above 0.1375; homes: a, b → 0; d, h → 1; c, e → 2; f, g → 3
@pytest.mark.parametrize(
    ("shares", "num_partitions", "hot"),
    [
        ({}, 8, set()),
        ({"a": 0.13, "b": 0.13, "c": 0.13, "d": 0.13, "e": 0.09, "f": 0.13, "g": 0.13, "h": 0.13}, 4, set()),
        ({"a": 0.25, "c": 0.25, "d": 0.25, "f": 0.25}, 4, {"a", "c", "d", "f"}),  # each above half of C
        ({"a": 0.2, "b": 0.1, "c": 0.7}, 4, {"a", "c"}),  # a + b overload partition 0: the larger leaves
        ({"a": 0.13, "b": 0.13}, 4, {"a", "b"}),  # with the unreported tail (0.185 each) both must leave
        ({"only": 1.0}, 1, {"only"}),
    ],
)
def test_hot_adapters_are_the_big_ones_and_those_overloading_their_home(shares, num_partitions, hot):
    assert {k: home_partition(k, 4) for k in "abcdefgh"} == {"a": 0, "b": 0, "c": 2, "d": 1, "e": 2, "f": 3, "g": 3, "h": 1}
    assert set(plan_routes(shares, num_partitions).spread) == hot


@pytest.mark.parametrize(("num_adapters", "num_partitions"), [(100, 16), (1000, 64), (10000, 64)])
def test_zipf_loads_stay_within_capacity(num_adapters, num_partitions):
    shares = zipf_shares(num_adapters)
    config = RoutingConfig()
    plan = plan_routes(shares, num_partitions, config)
    capacity = (1 + config.load_slack) / num_partitions
    cold = {k: v for k, v in shares.items() if k not in plan.spread}
    loads, cold_loads = partition_loads(plan, shares), partition_loads(plan, cold)
    tail = (1 - sum(shares.values())) / num_partitions  # zero here: every adapter is reported
    assert max(loads) <= capacity + tail + 1e-9  # no partition above C, cold ones included
    assert max(cold_loads) <= capacity + 1e-9
    for key, pieces in plan.spread.items():
        assert sum(w for _, w in pieces) == pytest.approx(shares[key])
        assert len({p for p, _ in pieces}) == len(pieces)  # a partition once
    hottest = plan.spread["team0/task"]
    assert hottest[0][0] == home_partition("team0/task", num_partitions)  # placed first: home has room
    # the hottest adapter (17.9% at 1,000) needs more than one partition, cold ones stay home
    assert len(plan.spread["team0/task"]) >= shares["team0/task"] / capacity


def test_affinity_alone_overloads_the_hot_partition():
    shares = zipf_shares(1000)
    keyed = partition_loads(RoutePlan(64), shares)
    assert max(keyed) > 10 * (1.1 / 64)


def test_requests_follow_the_weights_and_a_retry_lands_where_it_went():
    plan = RoutePlan(4, {"hot": ((2, 0.3), (0, 0.1))})
    picks = [plan.partition_for("hot", f"req-{i}") for i in range(4000)]
    assert set(picks) == {0, 2}
    assert picks.count(2) / len(picks) == pytest.approx(0.75, abs=0.03)
    assert plan.partition_for("hot", "req-7") == picks[7]
    assert plan.partition_for("cold", "req-1") == home_partition("cold", 4)


def test_the_plan_is_the_same_whatever_order_the_shares_come_in():
    shares = zipf_shares(300)
    backwards = dict(reversed(list(shares.items())))
    assert plan_routes(shares, 32) == plan_routes(backwards, 32)


def report(consumer: str, sent_ms: int, rates: dict[str, float], total: float, partitions: int = 8) -> bytes:
    return encode_report(TrafficReport(consumer, sent_ms, partitions, total, rates))


def test_shares_sum_over_consumers_and_divide_by_all_traffic():
    reports = [
        TrafficReport("c1", 0, 8, 100.0, {"a": 60.0, "b": 10.0}),
        TrafficReport("c2", 0, 16, 100.0, {"a": 20.0}),
    ]
    shares, partitions = merge_shares(reports)
    assert shares == {"a": pytest.approx(0.4), "b": pytest.approx(0.05)}
    assert partitions == 16
    assert merge_shares([]) == ({}, 0)
    assert merge_shares([TrafficReport("idle", 0, 8, 0.0, {})]) == ({}, 0)


def test_table_routes_hot_adapters_and_forgets_stale_or_stopped_consumers():
    table = RouteTable(RoutingConfig(max_report_age_ms=5_000), rebuild_ms=0)
    assert table.partition_for("a", "r1", now_ms=0) is None  # no stats: keyed
    table.apply(b"c1", report("c1", 1_000, {"a": 90.0, "b": 1.0}, 100.0))
    assert table.partition_for("a", "r1", now_ms=2_000) is not None
    assert table.partition_for("b", "r1", now_ms=2_000) is None  # cold: keyed, same place as home
    assert table.partition_for("a", "r1", now_ms=7_000) is None  # the report went stale
    table.apply(b"c1", report("c1", 7_000, {"a": 90.0}, 100.0))
    assert table.partition_for("a", "r1", now_ms=7_000) is not None
    table.apply(b"c1", None)  # the consumer stopped
    assert table.partition_for("a", "r1", now_ms=7_000) is None


@pytest.mark.parametrize(
    "value",
    [
        b"not json",
        report("c1", 0, {"../etc": 1.0}, 1.0),
        report("c1", 0, {"a": -1.0}, 1.0),
        report("bad consumer", 0, {}, 1.0),
        report("c1", 0, {f"a{i}": 1.0 for i in range(1025)}, 1.0),
        report("c1", 0, {}, 1.0, partitions=0),
    ],
)
def test_records_outside_the_bounds_are_refused(value):
    table = RouteTable()
    with pytest.raises((msgspec.ValidationError, msgspec.DecodeError)):
        table.apply(b"c1", value)
    assert table.num_rejected == 1


@pytest.mark.parametrize(
    "kwargs", [{"load_slack": 0}, {"hot_fraction": 0}, {"hot_fraction": 1.5}, {"min_piece_fraction": 1}, {"max_report_age_ms": 0}]
)
def test_config_is_validated(kwargs):
    with pytest.raises(ValueError):
        RoutingConfig(**kwargs)


# --- the whole loop in memory: a consumer's reports → the stats topic → a client's route table ---


async def test_consumer_reports_make_the_client_spread_a_hot_adapter():
    from consumers.inference.traffic_stats import TrafficStatsConfig, TrafficStatsPublisher
    from schemas import InferenceRequest
    from streamer import TopicNames, default_topic_specs
    from streamer.client_connection import RouteFollower
    from streamer.request_builder import publishable
    from streamer.transport.memory import MemoryTransport

    bus, topics = MemoryTransport(), TopicNames("skew")
    await bus.ensure_topics(default_topic_specs(topics, request_partitions=8))
    counts = {"hot/a": 0.0, "cold/b": 0.0, "__unresolved__": 0.0}
    clock = [0.0]
    config = TrafficStatsConfig(interval_s=3600, window_s=3600, top_n=8)
    publisher = TrafficStatsPublisher(bus, topics, "host 1/pid", lambda: counts, config, clock=lambda: clock[0])

    async def follow() -> RouteTable:
        routes = RouteTable()
        follower = RouteFollower(bus, topics.adapter_stats, routes)
        await follower.start()
        await asyncio.wait_for(follower.caught_up.wait(), 5)
        await follower.stop()
        return routes

    async with publisher:
        assert publisher.num_partitions == 8
        counts.update({"hot/a": 900.0, "cold/b": 50.0, "__unresolved__": 50.0})
        clock[0] = 10.0
        await publisher.publish_once()
        routes = await follow()
        report = routes._reports["host_1_pid"]  # served_by made safe for the record's bounds
        assert report.total_rps == pytest.approx(100.0)
        assert report.rates == {"hot/a": pytest.approx(90.0), "cold/b": pytest.approx(5.0)}  # no unresolved label
        picks = set()
        for i in range(200):
            request = InferenceRequest(request_id=f"r{i}", prompt="p", adapter_id="hot/a")
            key, _, partition = publishable(request, None, routes)
            assert key == b"hot/a"
            picks.add(partition)
        assert len(picks) >= 4  # 90% of the traffic needs >= 90 / (110 / 8) partitions
        cold = InferenceRequest(request_id="c", prompt="p", adapter_id="cold/b")
        assert publishable(cold, None, routes)[2] is None  # by key, as before
        assert publishable(InferenceRequest(request_id="h", prompt="p", adapter_id="hot/a"), "mine", routes)[2] is None
    assert (await follow())._reports == {}  # the tombstone sent on stop


def test_rates_are_measured_over_the_sliding_window():
    from consumers.inference.traffic_stats import RateWindow

    counts = {"a": 0.0}
    window = RateWindow(lambda: counts, top_n=1, window_s=10.0)
    assert window.rates(0.0) is None  # the first reading
    readings = [(2.0, 20.0), (4.0, 40.0), (12.0, 40.0), (16.0, 40.0)]  # traffic stops after t = 4
    rates = []
    for now_s, count in readings:
        counts["a"] = count
        rates.append(window.rates(now_s)[1].get("a", 0.0))
    # t=12: since t=2 (the last reading at least 10 s old); t=16: since t=4 (no traffic since)
    assert rates == [pytest.approx(10.0), pytest.approx(10.0), pytest.approx(2.0), 0.0]
    counts.update(b=5.0, c=50.0)
    total, top = window.rates(18.0)
    assert list(top) == ["c"]  # top_n busiest
    assert total == pytest.approx(55.0 / 14.0)


def test_the_table_holds_only_live_consumers_however_many_names_the_topic_has_seen():
    """Consumers that crashed leave their last report on the compacted topic; a client replaying it
    must not keep one entry per name ever seen."""
    table = RouteTable(RoutingConfig(max_report_age_ms=5_000), rebuild_ms=0)
    for i in range(1000):  # a thousand crashed consumers' last reports, long stale
        table.apply(f"gone-{i}".encode(), report(f"gone-{i}", 0, {"a": 1.0}, 1.0))
    table.apply(b"live", report("live", 100_000, {"a": 1.0}, 1.0))
    table.plan(100_000)
    assert table.num_reports == 1
