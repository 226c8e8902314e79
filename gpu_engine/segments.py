"""Segments: runs of step rows that share one adapter slot. Pure Python, no torch.

A step's rows are ordered by `segment_sort_key`, so each rank bucket's rows are contiguous and
sorted by slot (what a grouped GEMM needs) and base-only rows come last (they get no delta).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

BankSlot = tuple[int, int]  # (rank, slot) of an adapter in the LoRA bank


@dataclass(frozen=True)
class Segment:
    """Rows [start, end) of the step all use the adapter in `slot` of rank bucket `rank`."""

    rank: int
    slot: int
    start: int
    end: int


@dataclass(frozen=True)
class BucketRows:
    """The rows of one rank bucket: [start, end), and per slot the end row of its group.

    `group_ends[s]` counts the bucket's rows with slot <= s, relative to `start`; a slot with no
    rows repeats the previous value (an empty group), as `torch.nn.functional.grouped_mm` wants.
    `first_slot` is set when row i of the bucket uses slot first_slot + i (one row per slot, no
    gaps: the all-distinct decode case), so the bank's slot range can be used as a batch as is.
    """

    rank: int
    start: int
    end: int
    group_ends: tuple[int, ...]
    first_slot: int | None = None


def segment_sort_key(key: BankSlot | None) -> tuple[int, int, int]:
    """Order of sequences in a step: by rank bucket, then slot; base-only sequences last."""
    return (1, 0, 0) if key is None else (0, key[0], key[1])


def find_segments(keys: Sequence[BankSlot | None], num_rows: Sequence[int]) -> list[Segment]:
    """Merge consecutive sequences with the same adapter into segments; base-only rows are skipped.

    keys[i] and num_rows[i] describe the i-th sequence of the step, in row order. The engine's step
    builds its segments per adapter group in one pass (`step_runner.order_by_adapter`); this
    per-row form is the reference that one is tested against, and what kernel tests lay out with.
    """
    if len(keys) != len(num_rows):
        raise ValueError("keys and num_rows must have the same length")
    segments: list[Segment] = []
    row = 0
    for key, count in zip(keys, num_rows):
        if count < 0:
            raise ValueError("num_rows must be >= 0")
        if key is not None and count > 0:
            last = segments[-1] if segments else None
            if last is not None and (last.rank, last.slot) == key and last.end == row:
                segments[-1] = Segment(key[0], key[1], last.start, row + count)
            else:
                segments.append(Segment(key[0], key[1], row, row + count))
        row += count
    return segments


def group_buckets(segments: Sequence[Segment], capacities: dict[int, int]) -> list[BucketRows]:
    """Per rank bucket, the contiguous row range and grouped-GEMM group ends over all its slots.

    Raises ValueError when the segments are not in `segment_sort_key` order.
    """
    buckets: list[BucketRows] = []
    by_rank: dict[int, list[Segment]] = {}
    for seg in segments:
        by_rank.setdefault(seg.rank, []).append(seg)
    for rank, segs in by_rank.items():
        start, end = segs[0].start, segs[-1].end
        counts = [0] * capacities[rank]
        previous_slot, row = -1, start
        for seg in segs:
            if seg.start != row or seg.slot <= previous_slot:
                raise ValueError("segments of a rank bucket must be contiguous and sorted by slot")
            counts[seg.slot] = seg.end - seg.start
            previous_slot, row = seg.slot, seg.end
        ends, total = [], 0
        for count in counts:
            total += count
            ends.append(total)
        one_per_slot = all(s.end - s.start == 1 and s.slot == segs[0].slot + i for i, s in enumerate(segs))
        buckets.append(BucketRows(rank, start, end, tuple(ends), segs[0].slot if one_per_slot else None))
    return buckets
