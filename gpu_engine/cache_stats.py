"""Counters of the adapter cache tiers (device, host, disk). Thread-safe, pure Python.

The engine owns one `CacheStats`; the consumer reads `snapshot()` into its Prometheus metrics
(the engine never imports a metrics library).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

TIERS = ("device", "host", "disk")


@dataclass
class TierStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    evicted_bytes: int = 0
    bytes: int = 0  # resident now
    entries: int = 0  # resident now
    loads: int = 0
    load_seconds: list[float] = field(default_factory=list)  # most recent loads into this tier


class CacheStats:
    """`hit`/`miss`/`evict`/`loaded`/`resident` are called by the tiers; `snapshot` by readers."""

    max_samples = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tiers = {tier: TierStats() for tier in TIERS}

    def hit(self, tier: str) -> None:
        with self._lock:
            self._tiers[tier].hits += 1

    def miss(self, tier: str) -> None:
        with self._lock:
            self._tiers[tier].misses += 1

    def evict(self, tier: str, num_bytes: int) -> None:
        with self._lock:
            stats = self._tiers[tier]
            stats.evictions += 1
            stats.evicted_bytes += num_bytes

    def loaded(self, tier: str, seconds: float) -> None:
        """A load into `tier` finished after `seconds` (fetch for disk, parse for host, copy for device)."""
        with self._lock:
            stats = self._tiers[tier]
            stats.loads += 1
            stats.load_seconds.append(seconds)
            if len(stats.load_seconds) > self.max_samples:
                del stats.load_seconds[: len(stats.load_seconds) - self.max_samples]

    def resident(self, tier: str, num_bytes: int, entries: int) -> None:
        with self._lock:
            stats = self._tiers[tier]
            stats.bytes, stats.entries = num_bytes, entries

    def snapshot(self) -> dict[str, TierStats]:
        """A copy per tier, safe to read while the cache keeps working."""
        with self._lock:
            return {
                tier: TierStats(
                    s.hits, s.misses, s.evictions, s.evicted_bytes, s.bytes, s.entries, s.loads, list(s.load_seconds)
                )
                for tier, s in self._tiers.items()
            }
