"""DeviceCache: the device tier — adapters packed in `LoraBank` slots, LRU, pinned while used.

Keyed by (adapter_id, version). A running sequence pins its adapter's slot from admission until
it finishes; only unpinned slots are evicted (`bank.remove`), least recently used first, to make
room under `device_cache_bytes`. The budget bounds what the bank allocates (`bank.num_bytes`: a
rank bucket is as wide as the union of its adapters' targets and as long as its capacity), not
the sum of the adapters' own bytes: an insert that would take the bank over it evicts the fewest
least recently used slots whose removal, once the bank is trimmed, leaves room
(`bank.footprint`), and a placement that cannot fit raises DeviceBudgetError.
Engine thread only, except `__contains__` (any thread: prefetch asks it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from gpu_engine.adapters import LoraAdapter
from gpu_engine.byte_lru import ByteLRU
from gpu_engine.cache_stats import CacheStats
from gpu_engine.errors import DeviceBudgetError
from gpu_engine.lora_bank import LoraBank
from gpu_engine.segments import BankSlot
from gpu_engine.seq_state import AdapterKey

TIER = "device"


class DeviceCache:
    def __init__(self, bank: LoraBank, max_bytes: int | None, stats: CacheStats) -> None:
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be >= 1 or None")
        self.bank = bank
        self.max_bytes = max_bytes
        # value: (slot, the adapter's own bytes); the budget is enforced here against bank.num_bytes
        self._lru: ByteLRU[AdapterKey, tuple[BankSlot, int]] = ByteLRU(None)
        self._lock = threading.Lock()
        self._stats = stats

    @property
    def num_bytes(self) -> int:
        """Bytes the bank has allocated on the device (what the budget bounds)."""
        return self.bank.num_bytes

    @property
    def pinned_host_bytes(self) -> int:
        """Page-locked host memory the device tier holds: its upload staging buffer (0 off CUDA)."""
        return self.bank.upload.pinned_bytes

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
        """The adapter's own weight bytes of a resident entry (0 when absent)."""
        entry = self._lru.peek(key)
        return 0 if entry is None else entry[1]

    def slot(self, key: AdapterKey) -> BankSlot | None:
        entry = self._lru.peek(key)
        return None if entry is None else entry[0]

    def acquire(self, key: AdapterKey) -> BankSlot | None:
        """Pin a resident adapter and return its slot (a hit); None when it is not resident."""
        with self._lock:
            entry = self._lru.get(key)
            if entry is None:
                return None
            self._lru.pin(key)
        self._stats.hit(TIER)
        return entry[0]

    def fits(self, adapter: LoraAdapter, keep: list[AdapterKey]) -> bool:
        """Would the bank fit the budget with only `keep`'s slots and `adapter`?"""
        if self.max_bytes is None:
            return True
        slots = [slot for slot in (self.slot(key) for key in keep) if slot is not None]
        return self.bank.footprint(slots, adapter) <= self.max_bytes

    def can_fit(self, adapter: LoraAdapter) -> bool:
        """Room for `adapter` once every unpinned slot is evicted?"""
        with self._lock:
            pinned = [key for key in self._lru.keys() if self._lru.num_pins(key)]
        return self.fits(adapter, pinned)

    def insert(self, key: AdapterKey, adapter: LoraAdapter, stale: bool = False) -> BankSlot:
        """Copy a host adapter into a slot, evicting LRU unpinned ones first; returns it pinned (a miss).

        Raises DeviceBudgetError (nothing evicted) when the adapter cannot fit beside the pinned
        slots (`can_fit` says so beforehand) or the device is out of memory.
        """
        if self.max_bytes is not None and self.bank.num_bytes + self.bank.add_bytes(adapter) > self.max_bytes:
            self._make_room(adapter)
        slot = self.bank.add(adapter, self.max_bytes)
        with self._lock:
            self._lru.pin(key)
            self._lru.put(key, (slot, adapter.num_bytes), adapter.num_bytes, stale)
        self._stats.miss(TIER)
        self.report_loads()
        self._report()
        return slot

    def report_loads(self) -> None:
        """Count the uploads that have completed since the last call, each timed to its completion
        (on CUDA an upload ends after `insert` returns: the engine thread calls this every step)."""
        for seconds in self.bank.upload.finished():
            self._stats.loaded(TIER, seconds)

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

    def _make_room(self, adapter: LoraAdapter) -> None:
        """Evict the fewest LRU unpinned slots that leave room for `adapter`, then trim the bank."""
        with self._lock:
            keys = self._lru.keys()
            pinned = [key for key in keys if self._lru.num_pins(key)]
            unpinned = [key for key in keys if not self._lru.num_pins(key)]
        if not self.fits(adapter, pinned):
            raise DeviceBudgetError(
                f"adapter {adapter.adapter_id!r}: no room in the {self.max_bytes}-byte device budget beside the"
                f" {len(pinned)} adapters in use"
            )
        low, high = 0, len(unpinned)  # footprint only shrinks as more LRU slots go: the fewest that fit
        while low < high:
            middle = (low + high) // 2
            gone = set(unpinned[:middle])
            if self.fits(adapter, [k for k in keys if k not in gone]):
                high = middle
            else:
                low = middle + 1
        gone = set(unpinned[:low])
        with self._lock:
            evicted = self._lru.invalidate(gone.__contains__)
        self._remove(evicted)
        self.bank.trim()

    def _remove(self, evicted: list[tuple[AdapterKey, tuple[BankSlot, int]]]) -> None:
        for _, (slot, num_bytes) in evicted:
            self.bank.remove(slot)
            self._stats.evict(TIER, num_bytes)
        if evicted:
            self._report()

    def _report(self) -> None:
        self._stats.resident(TIER, self.bank.num_bytes, len(self._lru))
