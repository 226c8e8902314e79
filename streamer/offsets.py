"""Which offsets are safe to commit: only those below the lowest request still unanswered.

Pure bookkeeping (no Kafka): the consumer calls `track` when it takes a record on, `done` when
the record is finished (answered and acknowledged), and commits `committable()`. Offsets never
fetched (compacted away, control batches) hold nothing back: gaps in the offset sequence are fine.

Only `track` moves a partition forward. `done` for an offset that is not open is ignored: after a
partition is revoked and handed back, a late acknowledgement of an answer from before the
rebalance must not move the commit past offsets the new assignment has not fetched yet.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Mapping
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)


class PartitionOffsets:
    """The open (taken on, unfinished) offsets of one partition."""

    def __init__(self) -> None:
        self._open: set[int] = set()
        self._heap: list[int] = []  # the open offsets, plus finished ones not yet popped
        self._next_after_seen = 0  # one past the highest offset tracked or finished

    def track(self, offset: int) -> None:
        if offset < 0:
            raise ValueError("offset must be >= 0")
        if offset not in self._open:
            self._open.add(offset)
            heapq.heappush(self._heap, offset)
        self._next_after_seen = max(self._next_after_seen, offset + 1)

    def done(self, offset: int) -> None:
        """Finished: no longer holds the partition back (ignored when `offset` is not open)."""
        if offset < 0:
            raise ValueError("offset must be >= 0")
        self._open.discard(offset)

    @property
    def num_open(self) -> int:
        return len(self._open)

    def next_offset(self) -> int:
        """The offset to commit: the lowest open one, or one past everything seen."""
        while self._heap and self._heap[0] not in self._open:
            heapq.heappop(self._heap)
        return self._heap[0] if self._heap else self._next_after_seen


class OffsetTracker(Generic[P]):
    """PartitionOffsets per partition, and what has been committed so far.

    A partition is known from its first `track` until `forget`: a late answer for a revoked
    partition must not move its offset (the new owner re-serves from the committed one).
    """

    def __init__(self) -> None:
        self._partitions: dict[P, PartitionOffsets] = {}
        self._committed: dict[P, int] = {}

    def track(self, tp: P, offset: int) -> None:
        self._partitions.setdefault(tp, PartitionOffsets()).track(offset)

    def done(self, tp: P, offset: int) -> None:
        """Finished; ignored for a partition not tracked since its last `forget` (revoked)."""
        partition = self._partitions.get(tp)
        if partition is not None:
            partition.done(offset)

    def num_open(self, tp: P | None = None) -> int:
        """Open offsets of one partition, or of all of them."""
        if tp is not None:
            partition = self._partitions.get(tp)
            return partition.num_open if partition is not None else 0
        return sum(p.num_open for p in self._partitions.values())

    def committable(self) -> dict[P, int]:
        """{partition: next offset to commit} where it moved past the last `committed` one."""
        ready = {}
        for tp, partition in self._partitions.items():
            offset = partition.next_offset()
            if offset > self._committed.get(tp, 0):
                ready[tp] = offset
        return ready

    def committed(self, offsets: Mapping[P, int]) -> None:
        """Record a successful commit, so `committable` stops reporting those offsets."""
        for tp, offset in offsets.items():
            if tp in self._partitions:
                self._committed[tp] = max(self._committed.get(tp, 0), offset)

    def committed_offset(self, tp: P) -> int | None:
        """The last offset `committed` for `tp` since it was tracked, or None."""
        return self._committed.get(tp)

    def forget(self, tp: P) -> None:
        """Drop a revoked partition; its open offsets will be redelivered to the next owner."""
        self._partitions.pop(tp, None)
        self._committed.pop(tp, None)

    @property
    def partitions(self) -> list[P]:
        return list(self._partitions)
