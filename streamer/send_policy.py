"""What a failed send means. How often a send is tried is `streamer.retry.SEND_RETRY`.

A send either reaches the broker or ends in one `SendOutcome`. Only transient trouble (a broker
away, a leader moving, a timeout) is retried, a bounded number of times with back-off; a record
too large, a destination that does not exist and a destination the broker's ACLs refuse are
never retried, because trying again cannot change the answer.
"""

from __future__ import annotations

import enum

from aiokafka.errors import (
    InvalidTopicError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)

from schemas import ErrorCode


class SendOutcome(enum.Enum):
    """How one outgoing record ended."""

    DELIVERED = "delivered"
    """The broker acknowledged it."""
    TOO_LARGE = "too_large"
    """Over the producer's or the topic's size limit: never retried."""
    NO_SUCH_DESTINATION = "no_such_destination"
    """The topic or partition does not exist (or is not a valid name): never retried."""
    NOT_AUTHORIZED = "not_authorized"
    """The broker's ACLs refuse this service writing there: never retried."""
    GAVE_UP = "gave_up"
    """Transient failures outlasted the retry policy (the broker away for long)."""
    REFUSED = "refused"
    """Any other error the broker or client says retrying cannot fix."""

    @property
    def ok(self) -> bool:
        return self is SendOutcome.DELIVERED

    @property
    def wire_code(self) -> ErrorCode:
        """The error code an answer carries when its reply could not be sent for this reason."""
        return _WIRE_CODES.get(self, ErrorCode.INTERNAL)


_WIRE_CODES = {
    SendOutcome.TOO_LARGE: ErrorCode.RECORD_TOO_LARGE,
    SendOutcome.NO_SUCH_DESTINATION: ErrorCode.REPLY_TOPIC_NOT_FOUND,
    SendOutcome.NOT_AUTHORIZED: ErrorCode.REPLY_NOT_AUTHORIZED,
}


def classify(exc: BaseException) -> SendOutcome | None:
    """The final outcome a send error means, or None when it is transient and worth retrying."""
    if isinstance(exc, (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError)):
        return SendOutcome.TOO_LARGE
    if isinstance(exc, TopicAuthorizationFailedError):
        return SendOutcome.NOT_AUTHORIZED
    if isinstance(exc, InvalidTopicError):
        return SendOutcome.NO_SUCH_DESTINATION
    if isinstance(exc, KafkaTimeoutError):
        return None  # no metadata or no acknowledgement in time: the broker may be away
    if isinstance(exc, UnknownTopicOrPartitionError):
        return None  # metadata can lag a topic's creation: the caller checks before giving up
    if isinstance(exc, KafkaError):
        return None if getattr(exc, "retriable", False) else SendOutcome.REFUSED
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return None
    if isinstance(exc, (ValueError, TypeError, AssertionError)):
        return SendOutcome.REFUSED  # the client refused the arguments (a bad partition number)
    return None
