"""Listens to the control topic (cancellations) on every partition, outside any consumer group.

Every consumer must see every cancellation, since any of them may hold the request or job: the
inference service listens for `CancelRequest`, the training worker for `CancelJob`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from schemas import CancelJob, CancelRequest, InvalidEvent, decode_control
from streamer.follower import TopicFollower
from streamer.transport import Transport

log = logging.getLogger(__name__)


class ControlListener(TopicFollower):
    """Calls `on_cancel_request(request_id)` / `on_cancel_job(job_id)` for cancellations from now on;
    a kind without a callback, and a record that does not decode, are skipped."""

    name = "lorastream-control"

    def __init__(
        self,
        transport: Transport,
        topic: str,
        *,
        on_cancel_request: Callable[[str], None] | None = None,
        on_cancel_job: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(transport, topic, from_beginning=False)
        self._on_cancel_request = on_cancel_request
        self._on_cancel_job = on_cancel_job

    def on_record(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        try:
            event = decode_control(value or b"")
        except InvalidEvent as exc:
            log.warning("ignoring control record at %s: %s", offset, exc)
            return
        if isinstance(event, CancelRequest) and self._on_cancel_request is not None:
            self._on_cancel_request(event.request_id)
        elif isinstance(event, CancelJob) and self._on_cancel_job is not None:
            self._on_cancel_job(event.job_id)
