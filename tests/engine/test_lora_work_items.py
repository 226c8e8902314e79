"""Work items and launch configuration for the SGMV kernels: pure bookkeeping, table-driven."""

from __future__ import annotations

import itertools

import pytest

from gpu_engine.lora_work_items import (
    BLOCK_M, ITEM_FIELDS, SHRINK_BLOCK_K, build_work_items, cdiv, count_work_items, k_per_split, shrink_split_k,
    work_item_capacity,
)
from gpu_engine.segments import Segment


def segs(*specs):
    """(rank, slot, rows) per segment, laid out back to back from row 0."""
    out, row = [], 0
    for rank, slot, rows in specs:
        out.append(Segment(rank, slot, row, row + rows))
        row += rows
    return out


@pytest.mark.parametrize(
    ("segments", "ranks", "capacity", "expected"),
    [
        # a 100-row prefill beside 8 decodes: 7 + 8 items, not 9 segments × 7 blocks
        (segs((8, 0, 100), *[(8, s, 1) for s in range(1, 9)]), (8,), 108,
         [[(0, 100, 0), (16, 100, 0), (32, 100, 0), (48, 100, 0), (64, 100, 0), (80, 100, 0), (96, 100, 0)]
          + [(99 + s, 100 + s, s) for s in range(1, 9)]]),
        # two rank buckets, one empty in this step
        (segs((4, 2, 3), (16, 0, 17)), (4, 8, 16), 20, [[(0, 3, 2)], [], [(3, 20, 0), (19, 20, 0)]]),
        ([], (4,), 1, [[]]),
        ([], (), 0, []),
    ],
)
def test_build_work_items(segments, ranks, capacity, expected):
    table = build_work_items(segments, ranks, capacity)
    assert [table.items(b) for b in range(len(ranks))] == expected
    assert table.counts == tuple(len(e) for e in expected)
    assert len(table.values) == len(ranks) * capacity * ITEM_FIELDS + len(ranks)
    assert table.values[table.num_item_values :] == table.counts
    for b, items in enumerate(expected):  # padding items cover no rows
        base = b * capacity * ITEM_FIELDS
        padding = table.values[base + len(items) * ITEM_FIELDS : base + capacity * ITEM_FIELDS]
        assert set(padding) <= {0}


@pytest.mark.parametrize(
    ("segments", "expected"),
    [([], 0), (segs((8, 0, 1)), 1), (segs((8, 0, 100), (8, 1, 1)), 8), (segs((4, 0, 17), (8, 0, 1), (8, 1, 1)), 2)],
)
def test_count_work_items_is_the_largest_bucket(segments, expected):
    assert count_work_items(segments) == expected
    if segments:
        ranks = sorted({s.rank for s in segments})
        assert max(build_work_items(segments, ranks, expected).counts) == expected


def test_build_work_items_refuses():
    with pytest.raises(ValueError, match="rank 8"):
        build_work_items(segs((8, 0, 1)), (4,), 4)
    with pytest.raises(ValueError, match="capacity 1"):
        build_work_items(segs((4, 0, 1), (4, 1, 1)), (4,), 1)


def compositions(total: int):
    """Every way to cut `total` rows into consecutive non-empty segments (sizes)."""
    for cuts in itertools.product((False, True), repeat=max(0, total - 1)):
        sizes, size = [], 1
        for cut in cuts:
            if cut:
                sizes.append(size)
                size = 0
            size += 1
        yield sizes + [size] if total else []


@pytest.mark.parametrize("num_rows", [0, 1, 5, 16, 17, 18])
@pytest.mark.parametrize("max_segments", [None, 1, 2, 3])
def test_capacity_is_the_exact_worst_case(num_rows, max_segments):
    """No layout of num_rows rows in at most max_segments segments needs more; one needs exactly as many."""
    limit = num_rows if max_segments is None else max_segments
    worst = max(
        (sum(cdiv(n, BLOCK_M) for n in sizes) for sizes in compositions(num_rows) if len(sizes) <= limit), default=0
    )
    assert worst == work_item_capacity(num_rows, max_segments)


def test_capacity_random_layouts_fit():
    for num_rows in (5, 40, 90):
        for cut in itertools.islice(itertools.combinations(range(1, num_rows), 4), 0, None, 97):
            bounds = (0, *cut, num_rows)
            specs = [(8, i, bounds[i + 1] - bounds[i]) for i in range(len(bounds) - 1)]
            build_work_items(segs(*specs), (8,), work_item_capacity(num_rows))  # raises if it does not fit


@pytest.mark.parametrize(
    ("num_rows", "max_segments", "expected"),
    [(16, None, 16), (16, 4, 4 + 12 // BLOCK_M), (4096, 256, 256 + (4096 - 256) // BLOCK_M), (3, 8, 3)],
)
def test_capacity_with_max_segments(num_rows, max_segments, expected):
    assert work_item_capacity(num_rows, max_segments) == expected


@pytest.mark.parametrize(
    ("capacity", "in_features", "num_sms", "expected"),
    [
        (32, 4096, 132, 32),  # a batch-32 decode on an H200: 32 × 32 >= 4 × 132 programs > 32 × 16
        (128, 4096, 132, 8),
        (4096, 4096, 132, 1),  # a long prefill has enough row blocks
        (1, 64, 132, 1),  # one BLOCK_K tile: nothing to split
        (1, 200, 132, 4),  # never past one BLOCK_K tile per program: cdiv(200, 64) = 4 tiles
        (3, 150, 132, 2),  # ... and a power of two: cdiv(150, 64) = 3 tiles -> 2
        (0, 4096, 8, 32),
    ],
)
def test_shrink_split_k(capacity, in_features, num_sms, expected):
    assert shrink_split_k(capacity, in_features, num_sms) == expected


@pytest.mark.parametrize("in_features", [1, 32, 64, 65, 200, 4096, 14336])
@pytest.mark.parametrize("split_k", [1, 2, 4, 16])
def test_splits_cover_the_reduction_once(in_features, split_k):
    step = k_per_split(in_features, split_k)
    assert step % SHRINK_BLOCK_K == 0
    covered = [k for s in range(split_k) for k in range(s * step, min(in_features, (s + 1) * step))]
    assert covered == list(range(in_features))


def test_bad_arguments():
    with pytest.raises(ValueError):
        work_item_capacity(-1)
    with pytest.raises(ValueError):
        work_item_capacity(4, 0)
    with pytest.raises(ValueError):
        shrink_split_k(4, 0, 8)
