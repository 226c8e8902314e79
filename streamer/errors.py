"""Exceptions the streamer raises on purpose; all derive from the project base, lorastream.LorastreamError."""

from __future__ import annotations

from lorastream.errors import LorastreamError
from schemas import ErrorCode


class RequestFailed(LorastreamError):
    """The service answered a request with an Error record."""

    def __init__(self, request_id: str, code: ErrorCode, message: str) -> None:
        super().__init__(f"request {request_id} failed: {code.value}: {message}")
        self.request_id = request_id
        self.code = code
        self.message = message


class RequestTimeout(LorastreamError, TimeoutError):
    """No answer record for a request arrived within its timeout."""

    def __init__(self, request_id: str, timeout_s: float) -> None:
        super().__init__(f"request {request_id}: no answer record within {timeout_s:g} s")
        self.request_id = request_id
        self.timeout_s = timeout_s


class PublishFailed(LorastreamError):
    """A record could not be written to Kafka."""


class ClientClosed(LorastreamError):
    """The client was closed (or not started) while a request needed it."""


class TopicAdminError(LorastreamError):
    """Kafka refused to create, delete or describe a topic."""


class BrokerError(LorastreamError):
    """A development broker (Apache Kafka jars or Tansu) could not be started."""
