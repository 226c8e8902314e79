"""SlotAllocator: which KV-cache slots are free. Pure Python bookkeeping, no torch."""

from __future__ import annotations

import heapq


class SlotAllocator:
    """Hands out the lowest free slot, so running requests stay packed at the front of the cache
    and decode attention reads a short contiguous slot range."""

    def __init__(self, num_slots: int) -> None:
        if num_slots < 1:
            raise ValueError("num_slots must be >= 1")
        self.num_slots = num_slots
        self._free = list(range(num_slots))
        self._used: set[int] = set()

    @property
    def num_free(self) -> int:
        return len(self._free)

    def can_allocate(self) -> bool:
        return bool(self._free)

    def allocate(self) -> int:
        if not self._free:
            raise ValueError("no free KV-cache slot")
        slot = heapq.heappop(self._free)
        self._used.add(slot)
        return slot

    def release(self, slot: int) -> None:
        if slot not in self._used:
            raise ValueError(f"slot {slot} is not allocated")
        self._used.remove(slot)
        heapq.heappush(self._free, slot)
