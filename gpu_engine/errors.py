"""The engine's one exception hierarchy. Each error that reaches a caller carries its closed code."""

from __future__ import annotations

from gpu_engine.types import EngineErrorCode


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""

    code: EngineErrorCode = EngineErrorCode.INTERNAL


class AdapterNotFoundError(EngineError):
    """No adapter directory for this id under the adapter root (or no root configured)."""

    code = EngineErrorCode.ADAPTER_NOT_FOUND


class AdapterInvalidError(EngineError):
    """The adapter exists but cannot be served on this base (format, shapes, targets, rank)."""

    code = EngineErrorCode.ADAPTER_INVALID


class RequestInvalidError(EngineError):
    """The request cannot be served as asked (empty prompt, parameters out of range)."""

    code = EngineErrorCode.INVALID_PARAMS


class PromptTooLongError(EngineError):
    """The prompt leaves no room for a single new token within max_model_len."""

    code = EngineErrorCode.PROMPT_TOO_LONG


class UnsupportedModelError(EngineError):
    """The checkpoint's architecture or options are outside what the engine implements."""
