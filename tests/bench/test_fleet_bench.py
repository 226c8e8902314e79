"""`lorastream bench fleet` at tiny sizes: the queue arithmetic against a plain loop, and a smoke run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench import fleet

COSTS_MS = {"service": 10.0, "device_miss": 1.0, "cold_load": 5.0}


def reference_queue(adapters, arrivals_s, device_budget, host_budget):
    """One FIFO server, LRU tiers as plain lists: (service ms, queueing delay ms) per request."""
    device, host, free_at_ms, out = [], [], 0.0, []
    for adapter, arrival in zip(adapters, arrivals_s * 1000.0):
        service = COSTS_MS["service"]
        if adapter in device:
            device.remove(adapter)
        else:
            if adapter in host:
                host.remove(adapter)
                service += COSTS_MS["device_miss"]
            else:
                service += COSTS_MS["cold_load"]
                if len(host) == host_budget:
                    host.pop(0)
            host.append(adapter)
            if len(device) == device_budget:
                device.pop(0)
        device.append(adapter)
        start = max(arrival, free_at_ms)
        out.append((service, start - arrival))
        free_at_ms = start + service
    return out


@pytest.mark.parametrize(("device_budget", "host_budget"), [(1, 1), (2, 3), (4, 8)])
@pytest.mark.parametrize("gap_ms", [1.0, 10.0, 50.0])
def test_serve_matches_a_plain_fifo_loop(device_budget, host_budget, gap_ms):
    rng = np.random.default_rng(7)
    adapters = rng.integers(0, 6, size=300)
    arrivals_s = np.cumsum(rng.exponential(gap_ms / 1000.0, size=300))
    service_ms, delay_ms, hits = fleet.serve(adapters, arrivals_s, COSTS_MS, device_budget, host_budget)
    expected = reference_queue(adapters.tolist(), arrivals_s, device_budget, host_budget)
    assert service_ms.tolist() == pytest.approx([s for s, _ in expected])
    assert delay_ms.tolist() == pytest.approx([d for _, d in expected], abs=1e-6)
    assert hits == sum(1 for s, _ in expected if s == COSTS_MS["service"])


def test_partitions_follow_kafkas_default_partitioner():
    ids = [f"t{n}/a" for n in range(50)]
    adapters = np.arange(50)
    partitions = fleet.route("affinity", adapters, ids, fleet.zipf_shares(50, 1.1), 16, np.random.default_rng(0))
    from streamer.routing import home_partition

    assert partitions.tolist() == [home_partition(i, 16) for i in ids]


def test_a_tiny_fleet_run_writes_json_and_plot(tmp_path):
    out = tmp_path / "fleet.json"
    argv = ["--consumers", "2,16", "--adapters", "100", "--requests-per-consumer", "200", "--json", str(out)]
    assert fleet.main(argv) == 0
    result = json.loads(out.read_text())
    by_routing = {r: result["results"][r]["100"] for r in fleet.ROUTINGS}
    assert by_routing["skew"]["16"]["usable_capacity"] > 2 * by_routing["affinity"]["16"]["usable_capacity"]
    assert by_routing["random"]["16"]["device_hit_rate"] < by_routing["skew"]["16"]["device_hit_rate"]
    for row in by_routing["skew"].values():
        assert 0 < row["usable_capacity"] <= 1 and row["queue_ms_p50"] <= row["queue_ms_p99"]
    assert result["ratios"] == {}  # the headline (16 consumers, 1,000 adapters) was not run
    assert (tmp_path / "fleet.png").stat().st_size > 0
