"""Reply records → the right request, each piece of an answer delivered once. Pure: no Kafka.

Answer records carry (request_id, attempt, seq). At-least-once delivery means a record can
arrive twice, and a restarted consumer re-serves a request from the start with a higher attempt.
Per request:
- records whose `reply_token` is not the request's are dropped (forged). Whoever can write to a
  reply topic (no ACLs, or a shared topic) and knows a request_id could otherwise end someone
  else's answer with an Error of attempt 1000, which outranks the real answer. The token is a
  fresh secret per request that the service echoes in every answer record; learning it takes
  reading the requests topic or the requester's reply topic, which the ACLs reserve for the
  service and the requester (docs/security.md);
- records of an attempt lower than the highest seen are dropped (superseded);
- within the current attempt, seq <= the last delivered seq is dropped (duplicate);
- when a higher attempt starts, its text is suppressed up to the number of characters already
  delivered (and its token ids up to the count already delivered): retries are deterministic
  (the server seeds sampling per request), so the user sees one continuous answer;
- the first Final or Error ends the request; anything after it is ignored.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from schemas import ReplyRecord, TokenChunk

# receives the records of one request; the client also wakes it with an exception on close
Sink = Callable[[ReplyRecord | BaseException], None]


class ReplyDedup:
    """The delivery state of one request's answer."""

    def __init__(self) -> None:
        self.attempt = -1
        self.last_seq = -1
        self.is_finished = False
        self.num_chars_delivered = 0
        self.num_tokens_delivered = 0
        self._attempt_chars = 0  # characters the current attempt has sent so far
        self._attempt_tokens = 0

    def accept(self, record: ReplyRecord) -> ReplyRecord | None:
        """The record to deliver (a chunk may come back trimmed), or None to drop it."""
        if self.is_finished or record.attempt < self.attempt:
            return None
        if record.attempt > self.attempt:
            self.attempt = record.attempt
            self.last_seq = -1
            self._attempt_chars = 0
            self._attempt_tokens = 0
        if record.seq <= self.last_seq:
            return None
        self.last_seq = record.seq
        if isinstance(record, TokenChunk):
            return self._new_part(record)
        self.is_finished = True
        return record

    def _new_part(self, chunk: TokenChunk) -> TokenChunk | None:
        skip_chars = max(0, self.num_chars_delivered - self._attempt_chars)
        skip_tokens = max(0, self.num_tokens_delivered - self._attempt_tokens)
        self._attempt_chars += len(chunk.text)
        self._attempt_tokens += len(chunk.token_ids)
        if skip_chars == 0 and skip_tokens == 0:
            fresh = chunk
        else:
            text, token_ids = chunk.text[skip_chars:], chunk.token_ids[skip_tokens:]
            if not text and not token_ids:
                return None
            fresh = msgspec.structs.replace(chunk, text=text, token_ids=token_ids)
        self.num_chars_delivered += len(fresh.text)
        self.num_tokens_delivered += len(fresh.token_ids)
        return fresh


class ReplyDemux:
    """Routes records to the sink of their request; unknown request ids are ignored, and records
    without their request's reply_token are dropped.

    A request is registered before it is sent and unregistered when its reader stops; its
    entry goes away by itself once a Final or Error was delivered.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[ReplyDedup, Sink, str]] = {}
        self.num_ignored = 0  # records for requests this client is not (or no longer) waiting on
        self.num_dropped = 0  # duplicates and superseded attempts
        self.num_forged = 0  # records without the request's reply_token

    def register(self, request_id: str, reply_token: str | None, sink: Sink) -> None:
        """Route records of `request_id` that carry `reply_token` to `sink`."""
        if request_id in self._entries:
            raise ValueError(f"request_id {request_id} is already waiting for an answer")
        if not reply_token:
            raise ValueError(f"request_id {request_id} has no reply_token to check its answer by")
        self._entries[request_id] = (ReplyDedup(), sink, reply_token)

    def unregister(self, request_id: str) -> bool:
        """Stop routing records to a request; True when it was still waiting."""
        return self._entries.pop(request_id, None) is not None

    def sink(self, request_id: str) -> Sink | None:
        entry = self._entries.get(request_id)
        return entry[1] if entry is not None else None

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def request_ids(self) -> list[str]:
        return list(self._entries)

    def dispatch(self, record: ReplyRecord) -> bool:
        """Deliver `record` to its request's sink if it is new; True when delivered."""
        entry = self._entries.get(record.request_id)
        if entry is None:
            self.num_ignored += 1
            return False
        dedup, sink, reply_token = entry
        if record.reply_token != reply_token:
            self.num_forged += 1
            return False
        fresh = dedup.accept(record)
        if fresh is None:
            self.num_dropped += 1
            return False
        if dedup.is_finished:
            del self._entries[record.request_id]
        sink(fresh)
        return True
