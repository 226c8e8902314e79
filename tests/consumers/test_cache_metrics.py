"""The adapter-cache collector renders every tier's counters, gauges and load times."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from consumers.inference.cache_metrics import CacheCollector
from gpu_engine.cache_stats import CacheStats


def test_tier_counters_and_load_times_are_exposed() -> None:
    stats = CacheStats()
    stats.miss("device")
    stats.hit("device")
    stats.hit("device")
    stats.evict("host", 4096)
    stats.loaded("disk", 0.25)
    stats.loaded("disk", 0.75)
    stats.resident("device", 1000, 3)
    registry = CollectorRegistry()
    registry.register(CacheCollector(stats.snapshot))
    text = generate_latest(registry).decode()
    assert 'lorastream_adapter_cache_hits_total{tier="device"} 2.0' in text
    assert 'lorastream_adapter_cache_misses_total{tier="device"} 1.0' in text
    assert 'lorastream_adapter_cache_evicted_bytes_total{tier="host"} 4096.0' in text
    assert 'lorastream_adapter_cache_bytes{tier="device"} 1000.0' in text
    assert 'lorastream_adapter_cache_entries{tier="device"} 3.0' in text
    assert 'lorastream_adapter_load_seconds_count{tier="disk"} 2.0' in text
    assert 'lorastream_adapter_load_seconds_sum{tier="disk"} 1.0' in text
    assert 'lorastream_adapter_load_seconds_recent{quantile="0.99",tier="disk"} 0.75' in text
