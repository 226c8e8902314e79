"""ByteLRU: entries sized in bytes under a budget, least recently used first, with pins. Pure Python.

The bookkeeping shared by the host and device adapter tiers (host_cache.py, device_cache.py):
- `put` (and `make_room`) evict least recently used unpinned entries until the newcomer fits
  (`get` and `unpin` count as a use: an adapter is in use until its last request releases it);
- a pinned key (pin count > 0) is never evicted; a key may be pinned before it is present
  (a request waiting for its adapter's load), and the pin then protects the entry once put;
- `invalidate` drops matching unpinned entries now and marks pinned ones stale: a stale entry is
  still served to whoever holds it, and leaves as soon as its last pin goes.
Not thread-safe: the tiers wrap it in their own lock where needed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass
class _Entry(Generic[V]):
    value: V
    num_bytes: int
    is_stale: bool = False


class ByteLRU(Generic[K, V]):
    def __init__(self, max_bytes: int | None) -> None:
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be >= 1 or None")
        self.max_bytes = max_bytes
        self.num_bytes = 0
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()  # least recently used first
        self._pins: dict[K, int] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: K) -> bool:
        return key in self._entries

    def keys(self) -> list[K]:
        """Resident keys, least recently used first."""
        return list(self._entries)

    def num_pins(self, key: K) -> int:
        return self._pins.get(key, 0)

    def pinned_keys(self) -> list[K]:
        """Keys with pins, present or not."""
        return list(self._pins)

    def peek(self, key: K) -> V | None:
        """The value without touching the LRU order; None when absent."""
        entry = self._entries.get(key)
        return None if entry is None else entry.value

    def get(self, key: K) -> V | None:
        """The value, marked most recently used; None when absent."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry.value

    def pin(self, key: K) -> None:
        self._pins[key] = self._pins.get(key, 0) + 1

    def unpin(self, key: K) -> list[tuple[K, V]]:
        """Drop one pin; the entry counts as used now (it was, until this moment).

        Returns the entry if it was stale and this was its last pin (evicted).
        """
        count = self._pins.get(key, 0)
        if count < 1:
            raise ValueError(f"{key!r} is not pinned")
        if count > 1:
            self._pins[key] = count - 1
        else:
            del self._pins[key]
        entry = self._entries.get(key)
        if entry is None:
            return []
        if entry.is_stale and count == 1:
            return [self._pop(key)]
        self._entries.move_to_end(key)
        return []

    def can_fit(self, num_bytes: int) -> bool:
        """Would `num_bytes` fit after evicting every unpinned entry?"""
        if self.max_bytes is None:
            return True
        pinned = sum(e.num_bytes for k, e in self._entries.items() if k in self._pins)
        return pinned + num_bytes <= self.max_bytes

    def put(self, key: K, value: V, num_bytes: int, stale: bool = False) -> list[tuple[K, V]]:
        """Insert (most recently used) after evicting LRU unpinned entries; returns the evicted.

        The newcomer goes in even when pinned entries keep the total over budget (check
        `can_fit` first where that must not happen); an unpinned newcomer that alone exceeds
        the budget is evicted at once (it comes back in the returned list).
        """
        if key in self._entries:
            raise ValueError(f"{key!r} is already present")
        evicted = self.make_room(num_bytes)
        self._entries[key] = _Entry(value, num_bytes, stale)
        self.num_bytes += num_bytes
        if key not in self._pins and (stale or (self.max_bytes is not None and self.num_bytes > self.max_bytes)):
            evicted.append(self._pop(key))
        return evicted

    def invalidate(self, predicate: Callable[[K], bool]) -> list[tuple[K, V]]:
        """Evict the unpinned entries whose key matches; mark the pinned ones stale."""
        evicted = []
        for key in [k for k in self._entries if predicate(k)]:
            if key in self._pins:
                self._entries[key].is_stale = True
            else:
                evicted.append(self._pop(key))
        return evicted

    def make_room(self, num_bytes: int) -> list[tuple[K, V]]:
        """Evict LRU unpinned entries until `num_bytes` more would fit (or none is left to evict)."""
        if self.max_bytes is None or self.num_bytes + num_bytes <= self.max_bytes:
            return []
        evicted = []
        for key in [k for k in self._entries if k not in self._pins]:
            if self.num_bytes + num_bytes <= self.max_bytes:
                break
            evicted.append(self._pop(key))
        return evicted

    def _pop(self, key: K) -> tuple[K, V]:
        entry = self._entries.pop(key)
        self.num_bytes -= entry.num_bytes
        return key, entry.value
