"""Find, read and validate PEFT LoRA adapters into `LoraAdapter` objects (host tensors, scale folded).

Only `adapter_model.safetensors` is read, never pickle files. Each way an adapter can fail has its
own error class (gpu_engine/errors.py). Where the files come from is `store/`'s job; where the
weights live while served (device slots) is `lora_bank.py`'s; which adapters stay loaded is the
caller's.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from gpu_engine.adapter_patterns import ModulePatterns
from gpu_engine.errors import (
    AdapterBaseMismatchError,
    AdapterCorruptError,
    AdapterInvalidError,
    AdapterMissingFileError,
    AdapterNotFoundError,
    AdapterRankTooLargeError,
    AdapterUnsupportedError,
)
from gpu_engine.families.registry import FUSED_PROJECTIONS
from gpu_engine.model_spec import ModelSpec
from gpu_engine.adapter_files import current_version_dir, is_reserved_segment

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PICKLE_FILE = "adapter_model.bin"
_KEY = re.compile(r"^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")
_ID_CHARS = re.compile(r"^[A-Za-z0-9._/-]{1,128}$")
# adapter_config.json options that change what the weights mean or how they apply; any truthy value
# is refused (PEFT's init-only options such as loftq/eva/corda and the backward-only VeLoRA are fine)
_UNSUPPORTED_OPTIONS = (
    "use_dora", "fan_in_fan_out", "lora_bias", "modules_to_save", "layer_replication", "target_parameters",
    "trainable_token_indices", "alora_invocation_tokens", "use_qalora", "use_bdlora", "arrow_config",
    "kasa_config", "monteclora_config",
)
_WEIGHT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


@dataclass(frozen=True)
class LoraWeights:
    """One adapted projection. delta(x) = x @ a.T @ b_t, with alpha/r already folded into b_t.

    `a` keeps PEFT's lora_A layout (rows contiguous along in_features: the shrink reads it as
    dot products), `b_t` is lora_B transposed (the expand streams its rows).
    """

    a: torch.Tensor  # [rank, in_features]
    b_t: torch.Tensor  # [rank, out_features]


@dataclass(frozen=True)
class LoraAdapter:
    """A validated adapter: every projection it adapts, all padded to one rank."""

    adapter_id: str
    rank: int
    weights: dict[tuple[int, str], LoraWeights]  # (layer index, projection name) -> weights

    @property
    def num_bytes(self) -> int:
        return sum(w.a.nbytes + w.b_t.nbytes for w in self.weights.values())


def check_adapter_id(adapter_id: str) -> None:
    """Refuse ids that are not a relative path of plain names (no '..', '.', '//', leading '/', and no
    segment naming the version store or a file of the id above it)."""
    parts = adapter_id.split("/")
    if not _ID_CHARS.match(adapter_id) or any(p in ("", ".", "..") or is_reserved_segment(p) for p in parts):
        raise AdapterNotFoundError(f"adapter id {adapter_id!r} is not a valid adapter name")


def resolve_adapter_dir(adapter_root: str | Path | None, adapter_id: str) -> Path:
    """The directory to read for `adapter_id` under the root (its current version), refusing anything
    that would leave the root."""
    if adapter_root is None:
        raise AdapterNotFoundError(f"adapter {adapter_id!r}: no adapter root is configured")
    check_adapter_id(adapter_id)
    root = Path(adapter_root).resolve()
    path = current_version_dir((root / adapter_id).resolve())
    if not path.is_relative_to(root) or not (path / CONFIG_FILE).is_file():
        raise AdapterNotFoundError(f"adapter {adapter_id!r} not found")
    return path


def base_names_match(adapter_base: str, served_base: str) -> bool:
    """Same model? Compares last path components case-insensitively: '/m/Llama-3-8B/' ~ 'meta/llama-3-8b'."""

    def normalize(name: str) -> str:
        return name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1].lower()

    return normalize(adapter_base) == normalize(served_base)


def _read_config(
    path: Path, adapter_id: str, base_name: str | None
) -> tuple[dict, ModulePatterns, ModulePatterns]:
    """The config, and its rank_pattern and alpha_pattern ready to match."""
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise AdapterMissingFileError(f"adapter {adapter_id!r}: {CONFIG_FILE} is missing")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deep
        raise AdapterInvalidError(f"adapter {adapter_id!r}: unreadable {CONFIG_FILE}: {exc}") from exc
    if not isinstance(config, dict):
        raise AdapterInvalidError(f"adapter {adapter_id!r}: {CONFIG_FILE} is not a JSON object")
    if config.get("peft_type") != "LORA":
        raise AdapterUnsupportedError(f"adapter {adapter_id!r}: peft_type {config.get('peft_type')!r} is not LORA")
    for option in _UNSUPPORTED_OPTIONS:
        if config.get(option):
            raise AdapterUnsupportedError(f"adapter {adapter_id!r}: {option}={config[option]!r} is not supported")
    r, alpha = config.get("r"), config.get("lora_alpha")
    if not isinstance(r, int) or isinstance(r, bool) or r < 1 or not isinstance(alpha, (int, float)):
        raise AdapterInvalidError(f"adapter {adapter_id!r}: r must be a positive integer and lora_alpha a number")
    rank_pattern = ModulePatterns(config.get("rank_pattern") or {}, "rank_pattern", int, adapter_id)
    alpha_pattern = ModulePatterns(config.get("alpha_pattern") or {}, "alpha_pattern", (int, float), adapter_id)
    adapter_base = config.get("base_model_name_or_path")
    if base_name and isinstance(adapter_base, str) and adapter_base and not base_names_match(adapter_base, base_name):
        raise AdapterBaseMismatchError(f"adapter {adapter_id!r}: trained for {adapter_base!r}, not {base_name!r}")
    return config, rank_pattern, alpha_pattern


def _read_tensors(path: Path, adapter_id: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights_path = path / WEIGHTS_FILE
    if not weights_path.is_file():
        pickle_note = f" ({PICKLE_FILE} is present, but pickle files are never read)" if (path / PICKLE_FILE).exists() else ""
        raise AdapterMissingFileError(f"adapter {adapter_id!r}: {WEIGHTS_FILE} is missing{pickle_note}")
    try:
        return load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError, TypeError, RuntimeError) as exc:
        raise AdapterCorruptError(f"adapter {adapter_id!r}: corrupt {WEIGHTS_FILE}: {exc}") from exc


def _pair_tensors(tensors: dict[str, torch.Tensor], spec: ModelSpec, adapter_id: str) -> dict:
    pairs: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        match = _KEY.match(key)
        if match is None:
            raise AdapterUnsupportedError(f"adapter {adapter_id!r}: {_unsupported_tensor(key)}")
        layer, block, proj, which = int(match[1]), match[2], match[3], match[4]
        if proj not in spec.projections or spec.block_of(proj) != block:
            raise AdapterUnsupportedError(f"adapter {adapter_id!r}: {_unknown_target(block, proj, spec)}")
        if layer >= spec.num_layers:
            raise AdapterBaseMismatchError(
                f"adapter {adapter_id!r}: layer {layer} beyond the base's {spec.num_layers}; trained for another base?"
            )
        if tensor.dtype not in _WEIGHT_DTYPES:
            raise AdapterInvalidError(f"adapter {adapter_id!r}: {key} has dtype {tensor.dtype}, not a float type")
        pairs.setdefault((layer, proj), {})[which] = tensor
    if not pairs:
        raise AdapterInvalidError(f"adapter {adapter_id!r}: no LoRA weights")
    return pairs


def _unsupported_tensor(key: str) -> str:
    """Why a tensor that is not a decoder-layer projection's lora_A/lora_B is refused, naming the feature."""
    if "lora_embedding_" in key or ".embed_tokens." in key:
        return f"embedding LoRA is not supported (tensor {key!r})"
    if ".lm_head." in key:
        return f"LoRA on lm_head is not supported (tensor {key!r})"
    if "lora_magnitude_vector" in key:
        return f"DoRA (use_dora) is not supported (tensor {key!r})"
    return f"unsupported tensor {key!r}"


def _unknown_target(block: str, proj: str, spec: ModelSpec) -> str:
    fused = {part: name for name, parts in FUSED_PROJECTIONS.items() if name in spec.projections for part in parts}
    if proj in fused:
        return (
            f"target module {block}.{proj} does not exist in {spec.arch}, which fuses it into {fused[proj]};"
            f" train the adapter on {fused[proj]}"
        )
    return f"unknown target module {block}.{proj} for {spec.arch} (its projections: {', '.join(spec.projections)})"


def _check_pair(pair: dict, layer: int, proj: str, spec: ModelSpec, adapter_id: str, max_rank: int):
    if set(pair) != {"A", "B"}:
        raise AdapterInvalidError(f"adapter {adapter_id!r}: layer {layer} {proj} lacks lora_A or lora_B")
    a, b = pair["A"], pair["B"]  # a: [r, in], b: [out, r]
    where = f"adapter {adapter_id!r}: layer {layer} {proj}"
    if a.dim() != 2 or b.dim() != 2:
        raise AdapterInvalidError(f"{where}: lora_A/lora_B must be matrices")
    in_features, out_features = spec.projection_shape(proj)
    if a.shape[1] != in_features or b.shape[0] != out_features:
        raise AdapterBaseMismatchError(
            f"{where} shapes {tuple(a.shape)}/{tuple(b.shape)} do not fit the base ({in_features}->{out_features});"
            " trained for another base?"
        )
    rank = a.shape[0]
    if rank < 1:
        raise AdapterInvalidError(f"{where}: rank 0")
    if b.shape[1] != rank:
        raise AdapterInvalidError(f"{where}: lora_A rank {rank} and lora_B rank {b.shape[1]} differ")
    if rank > max_rank:
        raise AdapterRankTooLargeError(f"{where}: rank {rank} above the server's max_lora_rank {max_rank}")
    return a, b


def _fold(a: torch.Tensor, b: torch.Tensor, scale: float, rank: int, dtype: torch.dtype) -> LoraWeights:
    """Pad to `rank`, cast to `dtype`, fold `scale` into lora_B: one write per output tensor."""
    r = a.shape[0]
    if r == rank and a.dtype == dtype:
        a_out = a  # safetensors hands out owned, contiguous tensors: no copy needed
    else:
        a_out = torch.zeros((rank, a.shape[1]), dtype=dtype)  # zero rows add exactly nothing to the delta
        a_out[:r].copy_(a)
    b_t = torch.empty((rank, b.shape[0]), dtype=dtype)  # [rank, out]
    if r == rank:
        torch.mul(b.t(), scale, out=b_t)
    else:
        torch.mul(b.t(), scale, out=b_t[:r])
        b_t[r:].zero_()
    return LoraWeights(a_out, b_t)


def _check_finite(weights: dict[tuple[int, str], LoraWeights], adapter_id: str) -> None:
    """One reduction pass per tensor, one sync for all: min/max propagate NaN, and an inf is the min or max."""
    tensors = [t for w in weights.values() for t in (w.a, w.b_t)]
    bounds = torch.stack([torch.stack(torch.aminmax(t)).float() for t in tensors])  # [num_tensors, 2]
    finite = torch.isfinite(bounds).all(dim=1)
    if not finite.all():
        layer, proj = list(weights)[int((~finite).nonzero()[0]) // 2]
        raise AdapterCorruptError(f"adapter {adapter_id!r}: non-finite weights in layer {layer} {proj}")


def load_adapter(
    adapter_root: str | Path | None, adapter_id: str, spec: ModelSpec, dtype: torch.dtype, max_rank: int
) -> LoraAdapter:
    """Find `adapter_id` under a local root, then `read_adapter` it."""
    return read_adapter(resolve_adapter_dir(adapter_root, adapter_id), adapter_id, spec, dtype, max_rank)


def read_adapter(
    path: Path, adapter_id: str, spec: ModelSpec, dtype: torch.dtype, max_rank: int, base_name: str | None = None
) -> LoraAdapter:
    """Read and validate the adapter in directory `path` for the base described by `spec` (named `base_name`).

    Raises an AdapterInvalidError subclass whose code names what is wrong.
    """
    config, rank_pattern, alpha_pattern = _read_config(Path(path), adapter_id, base_name)
    pairs = _pair_tensors(_read_tensors(Path(path), adapter_id), spec, adapter_id)
    checked = {key: _check_pair(pair, *key, spec, adapter_id, max_rank) for key, pair in sorted(pairs.items())}
    rank = max(a.shape[0] for a, _ in checked.values())
    weights = {}
    for (layer, proj), (a, b) in checked.items():
        module = f"model.layers.{layer}.{spec.block_of(proj)}.{proj}"
        config_rank = rank_pattern.value(module, config["r"])
        alpha = alpha_pattern.value(module, config["lora_alpha"])
        scale = alpha / math.sqrt(config_rank) if config.get("use_rslora") else alpha / config_rank
        weights[(layer, proj)] = _fold(a, b, scale, rank, dtype)
    _check_finite(weights, adapter_id)
    return LoraAdapter(adapter_id=adapter_id, rank=rank, weights=weights)
