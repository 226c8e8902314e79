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


class AdapterCorruptError(AdapterInvalidError):
    """The weights file cannot be parsed as safetensors, or holds non-finite weights."""

    code = EngineErrorCode.ADAPTER_CORRUPT


class AdapterMissingFileError(AdapterInvalidError):
    """adapter_config.json or adapter_model.safetensors is absent (pickle files are never read)."""

    code = EngineErrorCode.ADAPTER_MISSING_FILE


class AdapterBaseMismatchError(AdapterInvalidError):
    """The adapter was trained for another base: its base name, layer count or shapes differ."""

    code = EngineErrorCode.ADAPTER_BASE_MISMATCH


class AdapterRankTooLargeError(AdapterInvalidError):
    """The adapter's rank is above the server's max_lora_rank."""

    code = EngineErrorCode.ADAPTER_RANK_TOO_LARGE


class AdapterUnsupportedError(AdapterInvalidError):
    """A LoRA variant or module the engine does not serve (DoRA, modules_to_save, unknown targets)."""

    code = EngineErrorCode.ADAPTER_UNSUPPORTED


class AdapterChecksumError(AdapterInvalidError):
    """The fetched files do not hash to the checksum the registry announced."""

    code = EngineErrorCode.ADAPTER_CHECKSUM_MISMATCH


class AdapterUnavailableError(EngineError):
    """The adapter store could not be reached or read; a later attempt may succeed."""

    code = EngineErrorCode.ADAPTER_UNAVAILABLE
