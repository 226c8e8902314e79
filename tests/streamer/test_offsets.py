"""Offset tracking: commit only below the lowest unanswered request of each partition."""

from __future__ import annotations

import pytest

from streamer import OffsetTracker, PartitionOffsets

# (steps, expected next offset); a step is ("track" | "done", offset)
CASES = {
    "nothing seen": ([], 0),
    "one open": ([("track", 5)], 5),
    "one answered": ([("track", 5), ("done", 5)], 6),
    "lowest still open holds back": (
        [("track", 0), ("track", 1), ("track", 2), ("done", 1), ("done", 2)],
        0,
    ),
    "answered out of order": (
        [("track", 0), ("track", 1), ("track", 2), ("done", 2), ("done", 0)],
        1,
    ),
    "all answered out of order": (
        [("track", 0), ("track", 1), ("track", 2), ("done", 2), ("done", 0), ("done", 1)],
        3,
    ),
    "gap in offsets (compaction, control batches)": (
        [("track", 10), ("track", 14), ("done", 10)],
        14,
    ),
    "done of an offset never tracked moves nothing": ([("track", 3), ("done", 3), ("done", 4)], 4),
    "late done past the open ones moves nothing": ([("track", 5), ("done", 12)], 5),
    "invalid record done at once, good one open": ([("track", 7), ("done", 6)], 7),
    "redelivered offset tracked twice": ([("track", 2), ("track", 2), ("done", 2)], 3),
    "done of an untracked lower offset": ([("track", 9), ("done", 9), ("done", 1)], 10),
}


@pytest.mark.parametrize("steps, expected", CASES.values(), ids=CASES.keys())
def test_partition_next_offset(steps: list[tuple[str, int]], expected: int) -> None:
    partition = PartitionOffsets()
    for action, offset in steps:
        getattr(partition, action)(offset)
    assert partition.next_offset() == expected


def test_negative_offsets_are_refused() -> None:
    partition = PartitionOffsets()
    with pytest.raises(ValueError):
        partition.track(-1)
    with pytest.raises(ValueError):
        partition.done(-1)


def test_tracker_reports_only_progress_since_the_last_commit() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    tracker.track("a", 0)
    tracker.track("a", 1)
    tracker.track("b", 0)
    assert tracker.committable() == {}  # nothing answered: nothing to commit
    tracker.done("a", 0)
    assert tracker.committable() == {"a": 1}
    tracker.committed({"a": 1})
    assert tracker.committable() == {}
    tracker.done("a", 1)
    tracker.done("b", 0)
    assert tracker.committable() == {"a": 2, "b": 1}
    assert tracker.num_open() == 0


def test_forget_drops_a_revoked_partition() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    tracker.track("a", 4)
    tracker.track("b", 4)
    tracker.done("b", 4)
    tracker.forget("a")
    assert tracker.partitions == ["b"]
    assert tracker.num_open("a") == 0
    assert tracker.committable() == {"b": 5}
    tracker.done("a", 4)  # a late answer after revocation must not commit for the new owner
    assert tracker.committable() == {"b": 5}


def test_num_open_counts_unanswered() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    for offset in range(5):
        tracker.track("a", offset)
    tracker.done("a", 3)
    assert tracker.num_open("a") == 4
    assert tracker.num_open() == 4


def test_revoked_and_handed_back_never_commits_past_an_unanswered_offset() -> None:
    """The interleaving from issue 20: answers from before a rebalance are acknowledged late."""
    tracker: OffsetTracker[str] = OffsetTracker()
    for offset in (5, 6, 7):  # first assignment: three requests in flight
        tracker.track("a", offset)
    tracker.forget("a")  # revoked…
    tracker.track("a", 5)  # …handed back; the refetch has reached only offset 5 so far
    tracker.done("a", 7)  # the old answer for 7 is acknowledged now (6 is still in flight)
    tracker.done("a", 5)  # 5 is answered in the new assignment
    assert tracker.committable() == {"a": 6}  # never 8: offset 6 was never answered
    tracker.track("a", 6)
    tracker.track("a", 7)
    tracker.done("a", 6)
    assert tracker.committable() == {"a": 7}
