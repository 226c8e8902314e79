"""Find, read and validate PEFT LoRA adapters into `LoraAdapter` objects (host tensors, scale folded).

Only `adapter_model.safetensors` is read, never pickle files. Where the weights live while being
served (device slots) is `lora_bank.py`'s job; which adapters stay loaded is the caller's.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from gpu_engine.errors import AdapterInvalidError, AdapterNotFoundError
from gpu_engine.model_spec import ATTENTION_PROJECTIONS, MLP_PROJECTIONS, ModelSpec

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
_KEY = re.compile(r"^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")
_ID_CHARS = re.compile(r"^[A-Za-z0-9._/-]{1,128}$")


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


def resolve_adapter_dir(adapter_root: str | Path | None, adapter_id: str) -> Path:
    """The directory of `adapter_id` under the root, refusing anything that would leave the root."""
    if adapter_root is None:
        raise AdapterNotFoundError(f"adapter {adapter_id!r}: no adapter root is configured")
    parts = adapter_id.split("/")
    if not _ID_CHARS.match(adapter_id) or adapter_id.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise AdapterNotFoundError(f"adapter id {adapter_id!r} is not a valid adapter name")
    root = Path(adapter_root).resolve()
    path = (root / adapter_id).resolve()
    if not path.is_relative_to(root) or not (path / CONFIG_FILE).is_file():
        raise AdapterNotFoundError(f"adapter {adapter_id!r} not found")
    return path


def _pattern_value(patterns: dict, module_name: str, default):
    """PEFT's rank_pattern/alpha_pattern lookup: a key matches a suffix of the module name."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module_name):
            return value
    return default


def _read_config(path: Path, adapter_id: str) -> dict:
    try:
        config = json.loads((path / CONFIG_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise AdapterInvalidError(f"adapter {adapter_id!r}: unreadable {CONFIG_FILE}: {exc}") from exc
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        raise AdapterInvalidError(f"adapter {adapter_id!r}: not a LoRA adapter (peft_type must be 'LORA')")
    for flag in ("use_dora", "fan_in_fan_out", "lora_bias"):
        if config.get(flag):
            raise AdapterInvalidError(f"adapter {adapter_id!r}: {flag}=true is not supported")
    if config.get("modules_to_save"):
        raise AdapterInvalidError(f"adapter {adapter_id!r}: modules_to_save is not supported")
    if not isinstance(config.get("r"), int) or not isinstance(config.get("lora_alpha"), (int, float)):
        raise AdapterInvalidError(f"adapter {adapter_id!r}: r and lora_alpha must be numbers")
    return config


def _read_tensors(path: Path, adapter_id: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights_path = path / WEIGHTS_FILE
    if not weights_path.is_file():
        raise AdapterInvalidError(f"adapter {adapter_id!r}: {WEIGHTS_FILE} is missing (only safetensors is read)")
    try:
        return load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise AdapterInvalidError(f"adapter {adapter_id!r}: corrupt {WEIGHTS_FILE}: {exc}") from exc


def _pair_tensors(tensors: dict[str, torch.Tensor], spec: ModelSpec, adapter_id: str) -> dict:
    pairs: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        match = _KEY.match(key)
        if match is None:
            raise AdapterInvalidError(f"adapter {adapter_id!r}: unsupported tensor {key!r}")
        layer, block, proj, which = int(match[1]), match[2], match[3], match[4]
        allowed = ATTENTION_PROJECTIONS if block == "self_attn" else MLP_PROJECTIONS
        if proj not in allowed:
            raise AdapterInvalidError(f"adapter {adapter_id!r}: unknown target module {block}.{proj}")
        if layer >= spec.num_layers:
            raise AdapterInvalidError(f"adapter {adapter_id!r}: layer {layer} beyond the base's {spec.num_layers}")
        pairs.setdefault((layer, proj), {})[which] = tensor
    if not pairs:
        raise AdapterInvalidError(f"adapter {adapter_id!r}: no LoRA weights")
    return pairs


def load_adapter(
    adapter_root: str | Path | None, adapter_id: str, spec: ModelSpec, dtype: torch.dtype, max_rank: int
) -> LoraAdapter:
    """Find `adapter_id` under a local root, then `read_adapter` it."""
    return read_adapter(resolve_adapter_dir(adapter_root, adapter_id), adapter_id, spec, dtype, max_rank)


def read_adapter(
    path: Path, adapter_id: str, spec: ModelSpec, dtype: torch.dtype, max_rank: int, base_name: str | None = None
) -> LoraAdapter:
    """Read and validate the adapter in directory `path` for the base described by `spec`.

    Raises an EngineError subclass whose code names what is wrong.
    """
    config = _read_config(path, adapter_id)
    pairs = _pair_tensors(_read_tensors(path, adapter_id), spec, adapter_id)
    checked: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}
    for (layer, proj), pair in sorted(pairs.items()):
        if set(pair) != {"A", "B"}:
            raise AdapterInvalidError(f"adapter {adapter_id!r}: layer {layer} {proj} lacks lora_A or lora_B")
        a, b = pair["A"], pair["B"]  # a: [r, in], b: [out, r]
        in_features, out_features = spec.projection_shape(proj)
        rank = a.shape[0] if a.dim() == 2 else -1
        if a.dim() != 2 or b.dim() != 2 or a.shape[1] != in_features or b.shape != (out_features, rank):
            raise AdapterInvalidError(
                f"adapter {adapter_id!r}: layer {layer} {proj} shapes {tuple(a.shape)}/{tuple(b.shape)} do not fit"
                f" the base ({in_features}->{out_features}); trained for another base?"
            )
        if not 1 <= rank <= max_rank:
            raise AdapterInvalidError(f"adapter {adapter_id!r}: rank {rank} outside 1..{max_rank}")
        if not (a.is_floating_point() and b.is_floating_point()):
            raise AdapterInvalidError(f"adapter {adapter_id!r}: non-float LoRA weights")
        checked[(layer, proj)] = (a, b)
    rank = max(a.shape[0] for a, _ in checked.values())
    weights = {}
    for (layer, proj), (a, b) in checked.items():
        module = f"model.layers.{layer}.{'self_attn' if proj in ATTENTION_PROJECTIONS else 'mlp'}.{proj}"
        config_rank = _pattern_value(config.get("rank_pattern") or {}, module, config["r"])
        alpha = _pattern_value(config.get("alpha_pattern") or {}, module, config["lora_alpha"])
        scale = alpha / math.sqrt(config_rank) if config.get("use_rslora") else alpha / config_rank
        a32, b32 = a.to(torch.float32), b.to(torch.float32) * scale
        if not (torch.isfinite(a32).all() and torch.isfinite(b32).all()):
            raise AdapterInvalidError(f"adapter {adapter_id!r}: non-finite weights in layer {layer} {proj}")
        pad = rank - a.shape[0]  # zero rows/columns add exactly nothing to the delta
        a_padded = torch.nn.functional.pad(a32, (0, 0, 0, pad))  # [rank, in]
        b_t = torch.nn.functional.pad(b32.t(), (0, 0, 0, pad))  # [rank, out]
        weights[(layer, proj)] = LoraWeights(a_padded.to(dtype).contiguous(), b_t.to(dtype).contiguous())
    return LoraAdapter(adapter_id=adapter_id, rank=rank, weights=weights)
