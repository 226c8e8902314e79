"""LoRA work items: the (segment, row block) pairs the SGMV kernels run over, in fixed-capacity tables.

Per rank bucket, each segment (segments.py) becomes cdiv(rows, BLOCK_M) work items
(row_start, row_end, slot): rows row_start .. min(row_start + BLOCK_M, row_end) use bank slot
`slot`. A table holds, for every rank bucket of the bank, `capacity` items (the real ones first,
then padding) and the bucket's count; the kernels are launched over the whole capacity and a
program past its bucket's count exits at once. The capacity depends only on the step's row
count, so launches do not depend on the data (a CUDA graph can hold them), and a long prefill
next to decodes costs its own row blocks, not segments × longest-segment programs.

Launch configuration (block sizes, split-K of the shrink) is chosen here from static shapes.
Pure Python: no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gpu_engine.segments import Segment

BLOCK_M = 16  # rows per work item (the smallest tl.dot tile)
ITEM_FIELDS = 3  # row_start, row_end, slot
SHRINK_BLOCK_K = 64
EXPAND_BLOCK_N = 64
# the shrink splits its reduction over in_features until about this many programs per SM are busy
PROGRAMS_PER_SM = 4


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def work_item_capacity(num_rows: int, max_segments: int | None = None) -> int:
    """The most work items `num_rows` rows in at most `max_segments` segments can need (per bucket).

    S segments of n_i >= 1 rows need sum cdiv(n_i, BLOCK_M) <= S + (sum n_i - S) // BLOCK_M items.
    """
    if num_rows < 0 or (max_segments is not None and max_segments < 1):
        raise ValueError("num_rows must be >= 0 and max_segments >= 1")
    segments = num_rows if max_segments is None else min(num_rows, max_segments)
    return segments + (num_rows - segments) // BLOCK_M


def shrink_split_k(capacity: int, in_features: int, num_sms: int) -> int:
    """How many programs share one work item's reduction over `in_features` (a power of two).

    A decode step has one row per segment, so without a split the shrink gets one program per
    adapter; it is split until capacity × split reaches PROGRAMS_PER_SM × num_sms programs, and
    never past one BLOCK_K tile per program.
    """
    if capacity < 0 or in_features < 1 or num_sms < 1:
        raise ValueError("capacity must be >= 0, in_features and num_sms >= 1")
    max_split = cdiv(in_features, SHRINK_BLOCK_K)
    split = 1
    while split * 2 <= max_split and max(capacity, 1) * split < PROGRAMS_PER_SM * num_sms:
        split *= 2
    return split


def k_per_split(in_features: int, split_k: int) -> int:
    """Columns of in_features each split reads: whole BLOCK_K tiles, so splits never overlap."""
    return cdiv(cdiv(in_features, split_k), SHRINK_BLOCK_K) * SHRINK_BLOCK_K


def count_work_items(segments: Sequence[Segment]) -> int:
    """The most work items any one rank bucket of these segments needs."""
    per_rank: dict[int, int] = {}
    for seg in segments:
        per_rank[seg.rank] = per_rank.get(seg.rank, 0) + cdiv(seg.end - seg.start, BLOCK_M)
    return max(per_rank.values(), default=0)


@dataclass(frozen=True)
class WorkItemTable:
    """Per bank rank bucket (in `ranks` order) `capacity` items, flattened, then the counts.

    `values` is laid out as the device table: items[bucket][item][field], then counts[bucket].
    """

    ranks: tuple[int, ...]
    capacity: int
    counts: tuple[int, ...]
    values: tuple[int, ...]

    @property
    def num_item_values(self) -> int:
        return len(self.ranks) * self.capacity * ITEM_FIELDS

    def items(self, bucket: int) -> list[tuple[int, int, int]]:
        """The real items of one bucket (tests and debugging)."""
        base = bucket * self.capacity * ITEM_FIELDS
        return [
            tuple(self.values[base + i * ITEM_FIELDS : base + (i + 1) * ITEM_FIELDS])
            for i in range(self.counts[bucket])
        ]


def build_work_items(segments: Sequence[Segment], ranks: Sequence[int], capacity: int) -> WorkItemTable:
    """The step's work items per rank bucket in `ranks` order, padded to `capacity` items each.

    Raises ValueError when a segment's rank is not in `ranks` or a bucket needs more than `capacity`.
    """
    index = {rank: i for i, rank in enumerate(ranks)}
    per_bucket: list[list[int]] = [[] for _ in ranks]
    for seg in segments:
        if seg.rank not in index:
            raise ValueError(f"segment of rank {seg.rank} but the bank has ranks {tuple(ranks)}")
        fields = per_bucket[index[seg.rank]]
        for row_start in range(seg.start, seg.end, BLOCK_M):
            fields += (row_start, seg.end, seg.slot)
    values: list[int] = []
    counts = []
    for fields in per_bucket:
        count = len(fields) // ITEM_FIELDS
        if count > capacity:
            raise ValueError(f"{count} work items in one rank bucket, capacity {capacity}")
        counts.append(count)
        values += fields
        values += [0] * ((capacity - count) * ITEM_FIELDS)  # padding: an empty row range
    return WorkItemTable(tuple(ranks), capacity, tuple(counts), tuple(values + counts))
