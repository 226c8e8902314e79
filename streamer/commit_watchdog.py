"""Notices a partition whose committed offset stopped moving while records wait behind it.

A partition is stalled when it has lag (records past its committed offset) and its commit has not
advanced for `stall_after_s` — measured from its last commit, or from its assignment when it has
not committed since. A stalled partition turns /readyz false and is counted in a metric, so an
operator (or an orchestrator's readiness probe) sees a wedge instead of a healthy-looking process.
Pure bookkeeping: the service feeds it the clock and the lags.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)


class CommitWatchdog(Generic[P]):
    def __init__(self, stall_after_s: float) -> None:
        if stall_after_s <= 0:
            raise ValueError("stall_after_s must be > 0")
        self.stall_after_s = stall_after_s
        self._progress_s: dict[P, float] = {}  # partition → when its commit last moved (or it was assigned)

    def assigned(self, tp: P, now_s: float) -> None:
        self._progress_s[tp] = now_s

    def revoked(self, tp: P) -> None:
        self._progress_s.pop(tp, None)

    def committed(self, tp: P, now_s: float) -> None:
        if tp in self._progress_s:
            self._progress_s[tp] = now_s

    def stalled(self, lags: Mapping[P, int], now_s: float) -> list[P]:
        """The assigned partitions with lag > 0 whose commit has not moved for stall_after_s."""
        return [
            tp
            for tp, since_s in self._progress_s.items()
            if lags.get(tp, 0) > 0 and now_s - since_s >= self.stall_after_s
        ]
