"""The one percentile (lorastream/stats.py): nearest rank, table-tested."""

from __future__ import annotations

import pytest

from lorastream.stats import percentile


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([3.0], 0, 3.0),
        ([3.0], 50, 3.0),
        ([3.0], 100, 3.0),
        ([1, 2, 3, 4], 0, 1),
        ([1, 2, 3, 4], 25, 1),  # exactly 25% are <= 1
        ([1, 2, 3, 4], 26, 2),
        ([1, 2, 3, 4], 50, 2),
        ([1, 2, 3, 4], 75, 3),
        ([1, 2, 3, 4], 99, 4),
        ([1, 2, 3, 4], 100, 4),
        ([4, 1, 3, 2], 50, 2),  # order of input does not matter
        (list(range(1, 101)), 99, 99),
        (list(range(1, 101)), 99.5, 100),
        (list(range(1, 1001)), 99, 990),
        ([0.25, 0.5, 0.75], 99, 0.75),
        ([5, 5, 5, 1], 50, 5),
    ],
)
def test_nearest_rank(values, q, expected):
    assert percentile(values, q) == expected


def test_the_result_is_always_an_observed_value():
    values = [0.1 * i for i in range(37)]
    assert all(percentile(values, q) in values for q in range(0, 101))


@pytest.mark.parametrize(("values", "q"), [([], 50), ([1.0], -1), ([1.0], 101)])
def test_bad_input_is_refused(values, q):
    with pytest.raises(ValueError):
        percentile(values, q)
