"""The project's one percentile: nearest rank, so every reported p50/p99 is a value that was observed.

Definition: the smallest sample such that at least q% of the samples are less than or equal to it,
i.e. the ceil(q/100 * n)-th smallest (1-based), clamped to the first for q = 0. Benchmarks and
the metrics endpoint both use it, so a p99 means the same thing in every report.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank q-th percentile (q in 0..100) of a non-empty collection of numbers."""
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within [0, 100], got {q}")
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    rank = math.ceil(q * len(ordered) / 100)
    return ordered[max(rank, 1) - 1]
