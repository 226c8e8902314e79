"""The Kafka benchmark's workload and what one request looked like to its caller.

Shared by the client process (the Kafka path) and the serving process (the in-process path):
the same prompts, adapters and max_new_tokens go down both, timed the same way.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

KAFKA, INPROCESS = "kafka", "inprocess"  # the two paths compared


@dataclasses.dataclass(frozen=True)
class Workload:
    prompts: list[str]
    adapters: list[str | None]
    max_new_tokens: int

    def requests(self) -> Iterator[tuple[str, str | None]]:
        return zip(self.prompts, self.adapters)


@dataclasses.dataclass(frozen=True)
class StreamTiming:
    """One request as its caller saw it; times from just before it was sent."""

    ttft_ms: float
    total_ms: float
    tokens: int
    records: int  # records that carried tokens (Kafka: TokenChunks; in-process: engine events)


@dataclasses.dataclass(frozen=True)
class RoundResult:
    path: str
    wall_s: float  # first request sent → last answer complete
    streams: list[StreamTiming]
    cpu_s: dict[str, float]  # CPU seconds per process (see kafka_results.PROCESSES) during the round
    engine_steps: int = 0  # engine steps run during the round
    serving_threads_cpu_s: dict[str, float] = dataclasses.field(default_factory=dict)  # per thread, `name/tid`

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.streams)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s


class StreamClock:
    """When a request was sent, when its first token arrived, and what it delivered."""

    def __init__(self) -> None:
        self.sent_s = time.perf_counter()
        self.first_token_s: float | None = None
        self.tokens = 0
        self.records = 0

    def on_tokens(self, count: int) -> None:
        if not count:
            return
        if self.first_token_s is None:
            self.first_token_s = time.perf_counter()
        self.tokens += count
        self.records += 1

    def finish(self) -> StreamTiming:
        end_s = time.perf_counter()
        first_s = end_s if self.first_token_s is None else self.first_token_s
        return StreamTiming((first_s - self.sent_s) * 1000, (end_s - self.sent_s) * 1000, self.tokens, self.records)


def make_workload(streams: int, adapter_ids: list[str], max_new_tokens: int) -> Workload:
    prompts = [f"Request {i}: a short note about item {7 * i + 3} for the team." for i in range(streams)]
    return Workload(prompts, [adapter_ids[i % len(adapter_ids)] for i in range(streams)], max_new_tokens)
