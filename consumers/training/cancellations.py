"""Cancelled training jobs, remembered by job id for a while so that a job cancelled before it is
fetched is never started (the CancelJob records come from `streamer.control.ControlListener`)."""

from __future__ import annotations

from collections import OrderedDict

MAX_REMEMBERED_CANCELS = 1024


class CancelledJobs:
    """The job ids most recently cancelled, at most `capacity` of them (the oldest forgotten first)."""

    def __init__(self, capacity: int = MAX_REMEMBERED_CANCELS) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._capacity = capacity
        self._job_ids: OrderedDict[str, None] = OrderedDict()

    def add(self, job_id: str) -> None:
        self._job_ids[job_id] = None
        self._job_ids.move_to_end(job_id)
        while len(self._job_ids) > self._capacity:
            self._job_ids.popitem(last=False)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._job_ids
