"""The engine's typed exceptions. Each carries a short code string, defined once on its class.

The engine knows nothing of the wire: `GenerationEvent.error_code` is one of these strings, and
`consumers/inference/error_map.py` maps each to a wire `ErrorCode` in one place. Imports nothing
heavy, so the consumer can read the codes without loading torch.
"""

from __future__ import annotations

from lorastream.errors import LorastreamError


class EngineError(LorastreamError):
    """Base of every error the engine raises on purpose; its code is "internal" unless a subclass says."""

    code: str = "internal"


class AdapterNotFoundError(EngineError):
    """No adapter directory for this id under the adapter root (or no root configured)."""

    code = "adapter_not_found"


class AdapterInvalidError(EngineError):
    """The adapter exists but cannot be served on this base (format, shapes, targets, rank)."""

    code = "adapter_invalid"


class RequestInvalidError(EngineError):
    """The request cannot be served as asked (empty prompt, parameters out of range)."""

    code = "invalid_params"


class PromptTooLongError(EngineError):
    """The prompt leaves no room for a single new token within max_model_len."""

    code = "prompt_too_long"


class ChatTemplateMissingError(EngineError):
    """Chat messages for a model whose tokenizer has no chat template to render them with."""

    code = "chat_template_missing"


class UnsupportedModelError(EngineError):
    """The checkpoint's architecture or options are outside what the engine implements."""


class AdapterCorruptError(AdapterInvalidError):
    """The weights file cannot be parsed as safetensors, or holds non-finite weights."""

    code = "adapter_corrupt"


class AdapterMissingFileError(AdapterInvalidError):
    """adapter_config.json or adapter_model.safetensors is absent (pickle files are never read)."""

    code = "adapter_missing_file"


class AdapterBaseMismatchError(AdapterInvalidError):
    """The adapter was trained for another base: its base name, layer count or shapes differ."""

    code = "adapter_base_mismatch"


class AdapterRankTooLargeError(AdapterInvalidError):
    """The adapter's rank is above the server's max_lora_rank."""

    code = "adapter_rank_too_large"


class AdapterUnsupportedError(AdapterInvalidError):
    """A LoRA variant or module the engine does not serve (DoRA, modules_to_save, unknown targets)."""

    code = "adapter_unsupported"


class AdapterChecksumError(AdapterInvalidError):
    """The fetched files do not hash to the checksum the registry announced."""

    code = "adapter_checksum_mismatch"


class AdapterUnavailableError(EngineError):
    """The adapter store could not be reached or read; a later attempt may succeed."""

    code = "adapter_unavailable"


class AdapterTooLargeError(AdapterInvalidError):
    """A file of the adapter is larger than the engine's byte cap for it (gpu_engine/store/bounds.py)."""

    code = "adapter_too_large"


class AdapterPathRefusedError(AdapterNotFoundError):
    """A uri, directory or file outside the configured roots (another bucket, a symlink out of the root)."""

    code = "adapter_path_refused"


class AdapterPatternUnsafeError(AdapterInvalidError):
    """A rank_pattern/alpha_pattern key that cannot be matched in linear time (or is too long, or too many)."""

    code = "adapter_pattern_unsafe"


class DeviceBudgetError(AdapterUnavailableError):
    """The adapter's LoRA bank slot does not fit `device_cache_bytes` beside the pinned adapters, or the
    device is out of memory for it: refused where it is placed, never an OOM inside the scheduler."""

    code = "device_budget_exceeded"
