"""DeviceCache: the device tier — adapters packed in `LoraBank` slots, LRU by bytes, pinned while used.

Keyed by (adapter_id, version). A running sequence pins its adapter's slot from admission until
it finishes; only unpinned slots are evicted (`bank.remove`), least recently used first, to make
room under `device_cache_bytes`. An entry's size is its adapter's weight bytes (the bank's
buffers may be larger: a rank bucket is as wide as the union of its adapters' targets).
Engine thread only, except `__contains__` (any thread: prefetch asks it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from gpu_engine.adapters import LoraAdapter
from gpu_engine.byte_lru import ByteLRU
from gpu_engine.cache_stats import CacheStats
from gpu_engine.lora_bank import LoraBank
from gpu_engine.segments import BankSlot
from gpu_engine.seq_state import AdapterKey

TIER = "device"
_MAX_RESERVED_SLOTS = 4096


class DeviceCache:
    def __init__(self, bank: LoraBank, max_bytes: int | None, stats: CacheStats) -> None:
        self.bank = bank
        self._lru: ByteLRU[AdapterKey, tuple[BankSlot, int]] = ByteLRU(max_bytes)  # value: (slot, bytes)
        self._lock = threading.Lock()
        self._stats = stats

    @property
    def max_bytes(self) -> int | None:
        return self._lru.max_bytes

    @property
    def num_bytes(self) -> int:
        return self._lru.num_bytes

    def __contains__(self, key: AdapterKey) -> bool:
        with self._lock:
            return key in self._lru

    def __len__(self) -> int:
        return len(self._lru)

    def keys(self) -> list[AdapterKey]:
        """Resident keys, least recently used first."""
        with self._lock:
            return self._lru.keys()

    def num_pins(self, key: AdapterKey) -> int:
        return self._lru.num_pins(key)

    def pinned_keys(self) -> list[AdapterKey]:
        return self._lru.pinned_keys()

    def size(self, key: AdapterKey) -> int:
        """Bytes of a resident entry (0 when absent)."""
        entry = self._lru.peek(key)
        return 0 if entry is None else entry[1]

    def acquire(self, key: AdapterKey) -> BankSlot | None:
        """Pin a resident adapter and return its slot (a hit); None when it is not resident."""
        with self._lock:
            entry = self._lru.get(key)
            if entry is None:
                return None
            self._lru.pin(key)
        self._stats.hit(TIER)
        return entry[0]

    def can_fit(self, num_bytes: int) -> bool:
        """Room for `num_bytes` once every unpinned slot is evicted?"""
        with self._lock:
            return self._lru.can_fit(num_bytes)

    def insert(self, key: AdapterKey, adapter: LoraAdapter, stale: bool = False) -> BankSlot:
        """Copy a host adapter into a slot, evicting LRU unpinned ones first; returns it pinned (a miss).

        Check `can_fit` first: pinned slots are never evicted, so the budget could be exceeded.
        """
        num_bytes = adapter.num_bytes
        with self._lock:
            evicted = self._lru.make_room(num_bytes)
        self._remove(evicted)
        started = time.perf_counter()
        if adapter.rank not in self.bank.buckets and self.max_bytes is not None:
            self.bank.reserve(adapter.rank, min(self.max_bytes // num_bytes + 1, _MAX_RESERVED_SLOTS))
        slot = self.bank.add(adapter)
        with self._lock:
            self._lru.pin(key)
            self._lru.put(key, (slot, num_bytes), num_bytes, stale)
        self._stats.miss(TIER)
        self._stats.loaded(TIER, time.perf_counter() - started)
        self._report()
        return slot

    def release(self, key: AdapterKey) -> None:
        """Drop one pin; a stale entry leaves with its last pin."""
        with self._lock:
            evicted = self._lru.unpin(key)
        self._remove(evicted)

    def invalidate(self, predicate: Callable[[AdapterKey], bool]) -> None:
        """Evict the matching unpinned entries now; pinned ones leave with their last pin."""
        with self._lock:
            evicted = self._lru.invalidate(predicate)
        self._remove(evicted)

    def _remove(self, evicted: list[tuple[AdapterKey, tuple[BankSlot, int]]]) -> None:
        for _, (slot, num_bytes) in evicted:
            self.bank.remove(slot)
            self._stats.evict(TIER, num_bytes)
        if evicted:
            self._report()

    def _report(self) -> None:
        self._stats.resident(TIER, self._lru.num_bytes, len(self._lru))
