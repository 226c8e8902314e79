"""The one retry policy and the one retry helper of every Kafka client in the project.

A `RetryPolicy` says how long trouble is waited out: a number of tries, a deadline, or both, with
exponential back-off between tries. `retry_transient` runs an awaitable under a policy, retrying
only what `is_transient` says may pass (a broker away or not ready yet); everything else raises
at once. Loops that cannot be written as one awaitable (the outbox's per-destination lanes, the
client's reply reader) use the same policy object for their waits and their limits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from aiokafka.errors import KafkaError, KafkaTimeoutError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Try at most `max_tries` times (None: no limit) and stop retrying after `deadline_s`
    (None: no deadline); wait `first_backoff_s` after the first failure, doubling to `max_backoff_s`."""

    max_tries: int | None = 6
    deadline_s: float | None = None
    first_backoff_s: float = 0.05
    max_backoff_s: float = 2.0

    def __post_init__(self) -> None:
        if self.max_tries is not None and self.max_tries < 1:
            raise ValueError("max_tries must be >= 1 (or None: no limit)")
        if self.deadline_s is not None and self.deadline_s < 0:
            raise ValueError("deadline_s must be >= 0 (or None: no deadline)")
        if self.first_backoff_s < 0 or self.max_backoff_s < self.first_backoff_s:
            raise ValueError("backoffs must satisfy 0 <= first_backoff_s <= max_backoff_s")

    def backoff_s(self, failures: int) -> float:
        """The wait after the `failures`-th failed try (1-based)."""
        return min(self.first_backoff_s * 2 ** max(failures - 1, 0), self.max_backoff_s)

    def gives_up(self, failures: int, elapsed_s: float) -> bool:
        """True once `failures` failed tries, `elapsed_s` after the first, exhaust the policy."""
        out_of_tries = self.max_tries is not None and failures >= self.max_tries
        out_of_time = self.deadline_s is not None and elapsed_s >= self.deadline_s
        return out_of_tries or out_of_time

    def with_deadline(self, deadline_s: float) -> RetryPolicy:
        return dataclasses.replace(self, deadline_s=deadline_s)


SEND_RETRY = RetryPolicy()
"""Records on their way out: a few quick tries (the outbox's lanes), then the send has failed."""
START_RETRY = RetryPolicy(max_tries=None, deadline_s=60.0, first_backoff_s=0.1)
"""Clients starting up: a broker that is still coming up is waited for, up to a minute."""
READ_RETRY = RetryPolicy(max_tries=None, first_backoff_s=0.1)
"""A long-lived reader: keeps reading for as long as it runs, backing off while the broker is away."""


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying: the broker is not reachable or not ready yet (a request that timed out
    included: aiokafka marks its KafkaTimeoutError not retriable, but waiting is what it asks for)."""
    if isinstance(exc, KafkaTimeoutError):
        return True
    if isinstance(exc, KafkaError):
        return bool(getattr(exc, "retriable", False))
    return isinstance(exc, (ConnectionError, TimeoutError))


async def retry_transient(
    fn: Callable[[], Awaitable[T]], *, what: str, policy: RetryPolicy = START_RETRY
) -> T:
    """Await `fn()` until it succeeds, retrying transient errors as `policy` allows.

    Non-transient errors, and the last transient one once the policy is exhausted, propagate.
    """
    started_s = time.monotonic()
    failures = 0
    while True:
        try:
            return await fn()
        except Exception as exc:
            failures += 1
            elapsed_s = time.monotonic() - started_s
            if not is_transient(exc) or policy.gives_up(failures, elapsed_s):
                raise
            wait_s = policy.backoff_s(failures)
            if policy.deadline_s is not None:
                wait_s = min(wait_s, max(policy.deadline_s - elapsed_s, 0.0))
            log.warning("%s failed (%r); retrying in %.2f s", what, exc, wait_s)
            await asyncio.sleep(wait_s)
