"""Four `lorastream serve` processes in one group, Zipf traffic over a few dozen adapters.

Keyed by adapter id alone, the consumer owning the hottest adapter's partition does most of the
work. After the consumers have published their measured rates (the adapter-stats topic), a
LoraClient routes with streamer.routing: the busiest consumer's token count is within 1.3× of
the mean. Counts, and each consumer's device hit rate, go to the session's summary.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import time
import urllib.request
from collections import Counter

import pytest

from streamer import KafkaConfig, LoraClient, TopicNames
from streamer.brokers import free_port
from streamer.client_connection import RouteFollower
from streamer.routing import RouteTable
from streamer.transport.kafka import KafkaTransport

pytestmark = pytest.mark.kafka

CONSUMERS = ("skew-a", "skew-b", "skew-c", "skew-d")
PARTITIONS = 8  # two per consumer
NUM_ADAPTERS = 30
NUM_REQUESTS = 480
IN_FLIGHT = 32


def _metric(port: int, name: str, label: str = "") -> float:
    """The sum of a metric's samples whose line starts with `name` and holds `label`; -1 when none."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            body = response.read().decode()
    except OSError:
        return -1.0
    values = [float(line.split()[-1]) for line in body.splitlines() if line.startswith(name) and label in line]
    return sum(values) if values else -1.0


async def _wait_stable(ports: list[int], timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            counts = [await asyncio.to_thread(_metric, p, "lorastream_assigned_partitions ") for p in ports]
            if all(c > 0 for c in counts) and sum(counts) == PARTITIONS:
                return
            await asyncio.sleep(0.2)  # polling an HTTP endpoint: there is no event to wait on


async def _hit_rates(ports: list[int]) -> list[str]:
    rates = []
    for port in ports:
        device = await asyncio.to_thread(_metric, port, "lorastream_adapter_tier_requests_total", 'tier="device"')
        total = await asyncio.to_thread(_metric, port, "lorastream_adapter_tier_requests_total")
        rates.append(f"{device / total:.2f}" if device >= 0 and total > 0 else "n/a")
    return rates


async def _tokens_by_consumer(client: LoraClient, workload: list[str], *, keyed: bool) -> Counter[str]:
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(i: int, adapter_id: str):
        async with gate:
            key = adapter_id if keyed else None  # an explicit key: the route table is not asked
            return await client.generate(f"note {i}", adapter_id=adapter_id, max_new_tokens=4, partition_key=key)

    finals = await asyncio.gather(*(one(i, a) for i, a in enumerate(workload)))
    tokens: Counter[str] = Counter({name: 0 for name in CONSUMERS})
    for final in finals:
        tokens[final.served_by] += max(1, final.usage.completion_tokens)
    return tokens


def _spread(tokens: Counter[str]) -> float:
    return max(tokens.values()) / (sum(tokens.values()) / len(tokens))


async def _wait_for_hot_routes(kafka: KafkaConfig, topics: TopicNames, timeout_s: float) -> RouteTable:
    """Until the consumers' reports make some adapter hot (what a starting LoraClient then reads)."""
    routes = RouteTable()
    follower = RouteFollower(KafkaTransport(kafka), topics.adapter_stats, routes)
    await follower.start()
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                plan = routes.plan(time.time_ns() // 1_000_000)
                if plan is not None and plan.spread:
                    return routes
                await asyncio.sleep(0.2)  # reports arrive every couple of seconds
    finally:
        await follower.stop()


async def test_routing_under_skew_balances_four_consumers(
    kafka_bootstrap, topic_prefix, serve_process, tiny_model, tmp_path, report_counts
):
    _, adapter_root = tiny_model
    many = tmp_path / "adapters"
    adapter_ids = [f"team{i}/sentiment" for i in range(NUM_ADAPTERS)]
    for adapter_id in adapter_ids:
        shutil.copytree(adapter_root / "acme" / "sentiment", many / adapter_id)
    ports = [free_port() for _ in CONSUMERS]
    for name, port in zip(CONSUMERS, ports):
        serve_process(name, "--adapters", str(many), "--metrics-port", str(port), "--request-partitions", str(PARTITIONS))
    await _wait_stable(ports, timeout_s=120)

    rng = random.Random(18)
    weights = [(rank + 1) ** -1.1 for rank in range(NUM_ADAPTERS)]
    workload = rng.choices(adapter_ids, weights, k=NUM_REQUESTS)
    kafka, topics = KafkaConfig(bootstrap_servers=kafka_bootstrap), TopicNames(topic_prefix)

    async with LoraClient(config=kafka, topics=topics) as client:
        keyed = await _tokens_by_consumer(client, workload, keyed=True)
    routes = await _wait_for_hot_routes(kafka, topics, timeout_s=30)
    async with LoraClient(config=kafka, topics=topics) as client:  # reads the reports as it starts
        routed = await _tokens_by_consumer(client, workload, keyed=False)
    hit_rates = await _hit_rates(ports)

    hot = sorted(routes.plan(time.time_ns() // 1_000_000).spread)
    report_counts(
        f"skew routing: tokens by consumer keyed={dict(sorted(keyed.items()))} (busiest/mean {_spread(keyed):.2f}); "
        f"routed={dict(sorted(routed.items()))} (busiest/mean {_spread(routed):.2f}); "
        f"hot adapters={hot}; device hit rate by consumer={hit_rates}"
    )
    assert _spread(routed) <= 1.3, routed
    assert _spread(keyed) > _spread(routed)
