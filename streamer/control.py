"""Listens to the control topic (cancellations) on every partition, outside the consumer group.

Every inference consumer must see every cancellation, since any of them may hold the request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from streamer.follower import TopicFollower
from schemas import CancelRequest, InvalidEvent, decode_control
from streamer import KafkaConfig

log = logging.getLogger(__name__)


class ControlListener(TopicFollower):
    name = "lorastream-control"

    def __init__(self, kafka: KafkaConfig, topic: str, on_cancel: Callable[[str], None]) -> None:
        super().__init__(kafka, topic, from_beginning=False)
        self._on_cancel = on_cancel

    def on_record(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        try:
            event = decode_control(value or b"")
        except InvalidEvent as exc:
            log.warning("ignoring control record at %s: %s", offset, exc)
            return
        if isinstance(event, CancelRequest):
            self._on_cancel(event.request_id)
