"""Prometheus view of the engine's adapter cache tiers, read from `CacheStats` at scrape time.

A custom collector rather than counters updated by the engine: the engine stays free of any
metrics library, and a scrape costs one snapshot under the stats lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

from gpu_engine.cache_stats import TierStats
from lorastream.stats import percentile

_QUANTILES = (0.5, 0.99)


class CacheCollector(Collector):
    """`snapshot` returns tier name → TierStats (gpu_engine.cache_stats.CacheStats.snapshot)."""

    def __init__(self, snapshot: Callable[[], Mapping[str, TierStats]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator:
        tiers = self._snapshot()
        counters = {
            "hits": "Adapter lookups served from this tier",
            "misses": "Adapter lookups this tier could not serve",
            "evictions": "Adapters evicted from this tier to make room",
            "evicted_bytes": "Bytes evicted from this tier",
        }
        for field, doc in counters.items():
            family = CounterMetricFamily(f"lorastream_adapter_cache_{field}", doc, labels=["tier"])
            for tier, stats in tiers.items():
                family.add_metric([tier], getattr(stats, field))
            yield family
        for field, doc in (("bytes", "Bytes resident in this tier"), ("entries", "Adapters resident in this tier")):
            family = GaugeMetricFamily(f"lorastream_adapter_cache_{field}", doc, labels=["tier"])
            for tier, stats in tiers.items():
                family.add_metric([tier], getattr(stats, field))
            yield family
        loads = SummaryMetricFamily(
            "lorastream_adapter_load_seconds", "Time to load an adapter into this tier", labels=["tier"]
        )
        recent = GaugeMetricFamily(
            "lorastream_adapter_load_seconds_recent",
            "Quantiles of the most recent loads into this tier",
            labels=["tier", "quantile"],
        )
        for tier, stats in tiers.items():
            loads.add_metric([tier], count_value=stats.loads, sum_value=sum(stats.load_seconds))
            if stats.load_seconds:
                for q in _QUANTILES:
                    recent.add_metric([tier, str(q)], percentile(stats.load_seconds, 100 * q))
        yield loads
        yield recent
