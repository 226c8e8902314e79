"""Configuration of the inference consumer process."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from streamer.config import TopicNames
from streamer.retry import SEND_RETRY, RetryPolicy
from schemas.deadletter import DEFAULT_DEAD_LETTER_ORIGINAL_BYTES


@dataclass(frozen=True)
class ServeConfig:
    """What `lorastream serve` needs besides the Kafka connection and the engine."""

    group_id: str = "lorastream-inference"
    group_instance_id: str | None = None  # static membership: a restart within the session timeout keeps partitions
    consumer_id: str | None = None  # named in answers' served_by; default: instance id or host-pid
    max_inflight: int = 256  # requests admitted but not yet answered; above it the partitions pause
    resume_below: int | None = None  # partitions resume when in-flight drops below it; None: 3/4 of max_inflight
    max_fetch_records: int = 256
    chunk_flush_ms: float = 20.0  # a TokenChunk holds tokens at most this long…
    chunk_max_tokens: int = 16  # …or until it has this many
    commit_interval_ms: float = 100.0
    shutdown_drain_s: float = 30.0
    request_partitions: int = 8  # used when the service creates its topics
    metrics_host: str = "0.0.0.0"
    metrics_port: int | None = None  # None: no HTTP endpoint; 0: any free port
    registry_catch_up_s: float = 10.0  # at start, wait this long at most to replay the adapters topic
    reply_topic_pattern: str | None = None  # glob of topics answers may go to; None: "<prefix>.replies.*"
    dead_letter_max_original_bytes: int = DEFAULT_DEAD_LETTER_ORIGINAL_BYTES  # longer originals are truncated
    commit_stall_s: float = 120.0  # a partition with lag whose commit has not moved this long: not ready
    send_retry: RetryPolicy = SEND_RETRY  # transient send failures only
    # effectively-once answers (docs/delivery.md): a re-served request answered on the results topic
    reuse_answers: bool = True  # is answered from there, not computed again
    answer_lookback_margin_ms: float = 60_000.0  # read results from the first re-served record's time less this
    answer_lookback_max_records: int = 100_000  # …reading at most this many results records…
    answer_lookback_max_s: float = 5.0  # …for at most this long…
    answer_memory_max_bytes: int = 64 * 1024 * 1024  # …keeping at most this many bytes of answers
    # True: read this base's own lane, `<prefix>.requests.base.<base name>` in group `<group_id>.<base
    # name>` (several bases side by side); False: `<prefix>.requests` in `group_id`, as one base alone
    base_lane: bool = False
    catalogue_interval_s: float = 5.0  # how often the consumer announces what it serves (streamer.catalogue)

    @property
    def served_by(self) -> str:
        return self.consumer_id or self.group_instance_id or f"{socket.gethostname()}-{os.getpid()}"

    def __post_init__(self) -> None:
        if not self.group_id:
            raise ValueError("group_id must not be empty")
        if self.max_inflight < 1:
            raise ValueError("max_inflight must be >= 1")
        if self.resume_below is None:  # derived here, once: frozen, so set through object
            object.__setattr__(self, "resume_below", self.max_inflight * 3 // 4)
        if not 0 <= self.resume_below <= self.max_inflight:
            raise ValueError("resume_below must be within [0, max_inflight]")
        if self.max_fetch_records < 1:
            raise ValueError("max_fetch_records must be >= 1")
        if self.chunk_flush_ms < 0:
            raise ValueError("chunk_flush_ms must be >= 0")
        if self.chunk_max_tokens < 1:
            raise ValueError("chunk_max_tokens must be >= 1")
        if self.commit_interval_ms <= 0:
            raise ValueError("commit_interval_ms must be > 0")
        if self.shutdown_drain_s < 0:
            raise ValueError("shutdown_drain_s must be >= 0")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError("metrics_port must be within [0, 65535]")
        if self.registry_catch_up_s < 0:
            raise ValueError("registry_catch_up_s must be >= 0")
        if self.request_partitions < 1:
            raise ValueError("request_partitions must be >= 1")
        if self.reply_topic_pattern is not None and not self.reply_topic_pattern.strip():
            raise ValueError("reply_topic_pattern must not be empty")
        if self.dead_letter_max_original_bytes < 0:
            raise ValueError("dead_letter_max_original_bytes must be >= 0")
        if self.commit_stall_s <= 0:
            raise ValueError("commit_stall_s must be > 0")
        if self.answer_lookback_margin_ms < 0:
            raise ValueError("answer_lookback_margin_ms must be >= 0")
        if self.answer_lookback_max_records < 1:
            raise ValueError("answer_lookback_max_records must be >= 1")
        if self.answer_lookback_max_s <= 0:
            raise ValueError("answer_lookback_max_s must be > 0")
        if self.answer_memory_max_bytes < 1:
            raise ValueError("answer_memory_max_bytes must be >= 1")
        if not 0 < self.catalogue_interval_s <= 3600:
            raise ValueError("catalogue_interval_s must be in (0, 3600]")

    def requests_topic(self, topics: TopicNames, base_name: str | None) -> str:
        """The topic this consumer reads. Raises ValueError for a lane without a topic-safe base name."""
        if not self.base_lane:
            return topics.requests
        if base_name is None:
            raise ValueError("base_lane needs the engine's base name")
        return topics.requests_for(base_name)

    def consumer_group(self, base_name: str | None) -> str:
        """The consumer group it reads in: `group_id`, or `<group_id>.<base name>` in a lane."""
        if not self.base_lane:
            return self.group_id
        if base_name is None:
            raise ValueError("base_lane needs the engine's base name")
        return f"{self.group_id}.{base_name}"

    def reply_pattern(self, prefix: str) -> str:
        """The reply-topic glob for a deployment whose topics start with `prefix`."""
        return self.reply_topic_pattern or f"{prefix}.replies.*"
