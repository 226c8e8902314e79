"""Two inference consumers in one group: both serve, and while membership is stable every
adapter's requests are served by exactly one of them (requests are keyed by adapter_id)."""

from __future__ import annotations

import asyncio
import shutil
import urllib.request
from collections import defaultdict

import pytest

from streamer import KafkaConfig, LoraClient, TopicNames
from streamer.brokers import free_port

pytestmark = pytest.mark.kafka


def _assigned(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            body = response.read().decode()
    except OSError:
        return -1
    for line in body.splitlines():
        if line.startswith("lorastream_assigned_partitions "):
            return int(float(line.split()[1]))
    return -1


async def _wait_stable(ports: list[int], partitions: int, timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            counts = [await asyncio.to_thread(_assigned, p) for p in ports]
            if all(c > 0 for c in counts) and sum(counts) == partitions:
                return
            await asyncio.sleep(0.2)  # polling an HTTP endpoint: there is no event to wait on


async def test_two_consumers_share_load_with_adapter_affinity(
    kafka_bootstrap, topic_prefix, serve_process, tiny_model, tmp_path, report_counts
):
    model_dir, adapter_root = tiny_model
    many = tmp_path / "adapters"
    adapter_ids = [f"team{i}/sentiment" for i in range(10)]
    for adapter_id in adapter_ids:
        shutil.copytree(adapter_root / "acme" / "sentiment", many / adapter_id)
    ports = [free_port(), free_port()]
    for name, port in zip(("scale-a", "scale-b"), ports):
        serve_process(name, "--adapters", str(many), "--metrics-port", str(port))
    await _wait_stable(ports, partitions=4, timeout_s=120)

    kafka, topics = KafkaConfig(bootstrap_servers=kafka_bootstrap), TopicNames(topic_prefix)
    requests = [(adapter_ids[i % len(adapter_ids)], i) for i in range(80)]
    async with LoraClient(config=kafka, topics=topics) as client:
        finals = await asyncio.gather(
            *(client.generate(f"note {i}", adapter_id=a, max_new_tokens=4) for a, i in requests)
        )
    served: dict[str, set[str]] = defaultdict(set)
    for final in finals:
        served[final.adapter_id].add(final.served_by)
    consumers = set().union(*served.values())
    report_counts(f"scale-out: consumers serving={sorted(consumers)} adapters={len(served)}")
    assert consumers == {"scale-a", "scale-b"}
    assert all(len(by) == 1 for by in served.values()), dict(served)
