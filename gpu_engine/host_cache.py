"""HostCache: the host tier — parsed adapters (`LoraAdapter`) in host memory, LRU by bytes.

Keyed by (adapter_id, version). Thread-safe: loader threads put, the engine thread pins and
reads, registry threads invalidate. A key is pinned while a request waits for its adapter to
reach the device (pins may precede the load), so the budget (`host_cache_bytes`) can be exceeded
by adapters that waiting requests need; everything else is evicted least recently used first.
Entries are plain (pageable) host memory, so `host_cache_bytes` bounds what they hold; uploads
to the device go through one page-locked staging buffer (adapter_upload.py), accounted there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from gpu_engine.adapters import LoraAdapter
from gpu_engine.byte_lru import ByteLRU
from gpu_engine.cache_stats import CacheStats
from gpu_engine.seq_state import AdapterKey

TIER = "host"


class HostCache:
    def __init__(self, max_bytes: int | None, stats: CacheStats) -> None:
        self._lru: ByteLRU[AdapterKey, LoraAdapter] = ByteLRU(max_bytes)
        self._lock = threading.Lock()
        self._stats = stats

    @property
    def max_bytes(self) -> int | None:
        return self._lru.max_bytes

    @property
    def num_bytes(self) -> int:
        with self._lock:
            return self._lru.num_bytes

    def __contains__(self, key: AdapterKey) -> bool:
        with self._lock:
            return key in self._lru

    def keys(self) -> list[AdapterKey]:
        """Resident keys, least recently used first."""
        with self._lock:
            return self._lru.keys()

    def num_pins(self, key: AdapterKey) -> int:
        with self._lock:
            return self._lru.num_pins(key)

    def pinned_keys(self) -> list[AdapterKey]:
        with self._lock:
            return self._lru.pinned_keys()

    def get(self, key: AdapterKey) -> LoraAdapter | None:
        with self._lock:
            return self._lru.get(key)

    def put(self, key: AdapterKey, adapter: LoraAdapter, stale: bool = False) -> None:
        """Add a freshly loaded adapter (`stale`: its version was superseded while it loaded)."""
        with self._lock:
            evicted = self._lru.put(key, adapter, adapter.num_bytes, stale)
            self._report(evicted)

    def pin(self, key: AdapterKey) -> None:
        with self._lock:
            self._lru.pin(key)

    def unpin(self, key: AdapterKey) -> None:
        with self._lock:
            self._report(self._lru.unpin(key))

    def invalidate(self, predicate: Callable[[AdapterKey], bool]) -> None:
        with self._lock:
            self._report(self._lru.invalidate(predicate))

    def _report(self, evicted: list[tuple[AdapterKey, LoraAdapter]]) -> None:
        """Count evictions and publish what is resident. Caller holds the lock."""
        for _, adapter in evicted:
            self._stats.evict(TIER, adapter.num_bytes)
        self._stats.resident(TIER, self._lru.num_bytes, len(self._lru))
