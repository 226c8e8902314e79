"""Every failure the gateway answers, as an HTTP status and OpenAI's error body, in one place.

OpenAI's body is `{"error": {"message", "type", "param", "code"}}`; the SDKs raise by status
(400 BadRequestError, 401 AuthenticationError, 404 NotFoundError, 429 RateLimitError, >= 500
InternalServerError) and retry 429/5xx, honouring Retry-After. A wire error code (schemas.ErrorCode,
looked up by its value so a code added later still maps) keeps its name as the body's `code`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lorastream.errors import LorastreamError

# HTTP status of each wire error code; the body's `type` follows from the status (see _TYPES)
WIRE_ERROR_STATUS: dict[str, int] = {
    "malformed": 400,
    "invalid_request": 400,
    "unsupported_version": 400,
    "prompt_too_long": 400,
    "chat_template_missing": 400,  # the served model has no chat template: use /v1/completions
    "dataset_refused": 400,
    "adapter_not_found": 404,
    "base_not_served": 404,  # the model names a base no live consumer serves
    "adapter_invalid": 500,  # the adapter's files are there but cannot be served: the operator's to fix
    "adapter_corrupt": 500,
    "adapter_missing_file": 500,
    "adapter_base_mismatch": 500,
    "adapter_rank_too_large": 500,
    "adapter_unsupported": 500,
    "adapter_checksum_mismatch": 500,
    "adapter_too_large": 500,
    "adapter_path_refused": 500,
    "adapter_pattern_unsafe": 500,
    "adapter_unavailable": 503,  # the adapter store is unreachable: retrying may succeed
    "overloaded": 503,
    "reply_topic_refused": 502,  # the service could not answer the gateway: a deployment problem
    "reply_topic_not_found": 502,
    "reply_not_authorized": 502,
    "record_too_large": 502,
    "expired": 504,
    "cancelled": 499,  # cancelled by someone else (an operator): nginx's "client closed request"
    "internal": 500,
}
UNKNOWN_WIRE_ERROR_STATUS = 500
RETRYABLE_STATUSES = frozenset({429, 503})  # answered with Retry-After
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "invalid_request_error",
    429: "rate_limit_error",
    499: "cancelled",
    504: "timeout",
}
_SERVER_ERROR = "server_error"


@dataclass(frozen=True)
class ApiError(LorastreamError):
    """An answer other than 200: raised anywhere in the gateway, rendered by the app."""

    status: int
    message: str
    code: str
    param: str | None = None

    def __post_init__(self) -> None:
        LorastreamError.__init__(self, f"{self.status} {self.code}: {self.message}")

    @property
    def type(self) -> str:
        return _TYPES.get(self.status, _SERVER_ERROR)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def from_wire_error(code: str, message: str) -> ApiError:
    """The answer for an Error record the service sent (code: an ErrorCode's value)."""
    return ApiError(WIRE_ERROR_STATUS.get(code, UNKNOWN_WIRE_ERROR_STATUS), message, code)


def invalid(message: str, param: str | None = None, code: str = "invalid_request") -> ApiError:
    return ApiError(400, message, code, param)


def unsupported(param: str, why: str = "is not supported by this server") -> ApiError:
    return ApiError(400, f"`{param}` {why}", "unsupported_parameter", param)


def model_not_found(model: str) -> ApiError:
    return ApiError(404, f"The model `{model}` does not exist or you do not have access to it.", "model_not_found", "model")


def unauthorized() -> ApiError:
    return ApiError(401, "Incorrect or missing API key (send `Authorization: Bearer KEY`).", "invalid_api_key")


def timed_out(seconds: float) -> ApiError:
    return ApiError(504, f"no answer from the inference service within {seconds:g} s", "timeout")


def unavailable(message: str) -> ApiError:
    return ApiError(503, message, "service_unavailable")
