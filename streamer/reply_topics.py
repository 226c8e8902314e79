"""Where answers may go: the reply-topic lane of the bus, and which reply topics exist.

A `reply_to` address comes from whoever wrote the request, so it is checked twice before anything
is sent there. `ReplyPolicy` (pure): the topic matches the configured pattern (default
`<prefix>.replies.*`) and is none of the service's own topics. `ReplyTopicDirectory`: the topic
and partition exist, looked up once per topic (`Admin.describe_topic` of streamer/transport) and
remembered for a while (a missing topic for a short time, so that a client that creates its topic
late is not locked out), with one lookup in flight per topic and a bounded number of remembered
topics.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from schemas import ErrorCode, ReplyAddress

log = logging.getLogger(__name__)

_KAFKA_UNKNOWN_TOPIC = 3
_KAFKA_TOPIC_AUTHORIZATION_FAILED = 29


class ReplyPolicy:
    """Reply topics: those matching `pattern` (a shell-style glob), never the service's own."""

    def __init__(self, pattern: str, service_topics: Iterable[str]) -> None:
        if not pattern:
            raise ValueError("reply topic pattern must not be empty")
        self.pattern = pattern
        self._regex = re.compile(fnmatch.translate(pattern))
        self._service_topics = frozenset(service_topics)

    def refusal(self, topic: str) -> str | None:
        """Why answers may not go to `topic`, or None when they may."""
        if topic in self._service_topics:
            return f"reply_to {topic!r} is one of the service's own topics"
        if not self._regex.match(topic):
            return f"reply_to {topic!r} does not match the reply-topic pattern {self.pattern!r}"
        return None


@dataclass(frozen=True, slots=True)
class TopicStatus:
    """What the broker said of a topic: its partition count, or why answers cannot go there."""

    num_partitions: int = 0
    refused: ErrorCode | None = None  # REPLY_TOPIC_NOT_FOUND or REPLY_NOT_AUTHORIZED

    def refusal(self, address: ReplyAddress) -> tuple[ErrorCode, str] | None:
        if self.refused is ErrorCode.REPLY_NOT_AUTHORIZED:
            return self.refused, f"this service may not write to reply topic {address.topic!r}"
        if self.refused is not None:
            return self.refused, f"reply topic {address.topic!r} does not exist"
        if address.partition is not None and address.partition >= self.num_partitions:
            return (
                ErrorCode.REPLY_TOPIC_NOT_FOUND,
                f"reply topic {address.topic!r} has {self.num_partitions} partitions, not {address.partition + 1}",
            )
        return None


Describe = Callable[[str], Awaitable[dict]]  # one topic's entry of a metadata response


class ReplyTopicDirectory:
    def __init__(
        self,
        describe: Describe,
        *,
        found_ttl_s: float = 60.0,
        missing_ttl_s: float = 5.0,
        max_topics: int = 4096,
        lookup_timeout_s: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min(found_ttl_s, missing_ttl_s, lookup_timeout_s) <= 0 or max_topics < 1:
            raise ValueError("ttls, lookup timeout and max_topics must be positive")
        self._describe = describe
        self._found_ttl_s = found_ttl_s
        self._missing_ttl_s = missing_ttl_s
        self._max_topics = max_topics
        self._lookup_timeout_s = lookup_timeout_s
        self._clock = clock
        self._known: OrderedDict[str, tuple[TopicStatus, float]] = OrderedDict()  # topic → (status, until)
        self._lookups: dict[str, asyncio.Future[TopicStatus | None]] = {}

    def cached(self, topic: str) -> TopicStatus | None:
        entry = self._known.get(topic)
        if entry is None:
            return None
        status, until = entry
        if self._clock() >= until:
            del self._known[topic]
            return None
        return status

    def remember(self, topic: str, status: TopicStatus) -> None:
        """Record what is known of `topic` (also what a failed send taught the service)."""
        ttl_s = self._found_ttl_s if status.refused is None else self._missing_ttl_s
        self._known[topic] = (status, self._clock() + ttl_s)
        self._known.move_to_end(topic)
        while len(self._known) > self._max_topics:
            self._known.popitem(last=False)

    async def lookup(self, topic: str) -> TopicStatus | None:
        """The topic's status; None when the broker could not be asked (then let the send decide)."""
        status = self.cached(topic)
        if status is not None:
            return status
        pending = self._lookups.get(topic)
        if pending is None:
            pending = asyncio.ensure_future(self._ask(topic))
            self._lookups[topic] = pending
            pending.add_done_callback(lambda _: self._lookups.pop(topic, None))
        return await asyncio.shield(pending)

    async def _ask(self, topic: str) -> TopicStatus | None:
        try:
            entry = await asyncio.wait_for(self._describe(topic), self._lookup_timeout_s)
        except Exception as exc:  # broker away or slow: not a reason to refuse the request
            log.warning("could not look up reply topic %s: %r", topic, exc)
            return None
        error_code = entry.get("error_code", 0)
        if error_code == _KAFKA_TOPIC_AUTHORIZATION_FAILED:
            status = TopicStatus(refused=ErrorCode.REPLY_NOT_AUTHORIZED)
        elif error_code == _KAFKA_UNKNOWN_TOPIC or (error_code == 0 and not entry.get("partitions")):
            status = TopicStatus(refused=ErrorCode.REPLY_TOPIC_NOT_FOUND)
        elif error_code != 0:
            log.warning("reply topic %s: metadata error %d", topic, error_code)
            return None
        else:
            status = TopicStatus(num_partitions=len(entry["partitions"]))
        self.remember(topic, status)
        return status
