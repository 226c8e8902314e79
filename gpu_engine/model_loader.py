"""Load a local Llama/Mistral/Qwen2 checkpoint into plain tensors and projection modules.

Transformers reads the checkpoint (sharding, dtype, tied embeddings, optional NF4 through
bitsandbytes); everything the engine's own forward needs is then taken out of the HF module tree.
Checkpoint quirks are settled here, never in the forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gpu_engine.config import EngineConfig
from gpu_engine.errors import UnsupportedModelError
from gpu_engine.model_spec import PROJECTIONS, SUPPORTED_ARCHITECTURES, ModelSpec

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_STATIC_ROPE_TYPES = ("default", "linear", "llama3", "yarn")
_MAX_DEFAULT_MODEL_LEN = 4096


@dataclass
class LayerWeights:
    """One decoder layer. Projections are callables x: [T, in] -> [T, out] (dense or NF4)."""

    input_norm: torch.Tensor  # [H]
    post_attention_norm: torch.Tensor  # [H]
    projections: dict[str, nn.Module]  # the 7 PROJECTIONS


@dataclass
class BaseModel:
    """Everything the forward pass reads; produced once at start-up."""

    spec: ModelSpec
    embed: torch.Tensor  # [V, H]
    layers: list[LayerWeights]
    final_norm: torch.Tensor  # [H]
    lm_head: torch.Tensor  # [V, H]
    rope_cos: torch.Tensor  # [max_model_len, head_dim]
    rope_sin: torch.Tensor  # [max_model_len, head_dim]
    rms_norm_eps: float
    dtype: torch.dtype
    device: torch.device
    max_model_len: int


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def _check_supported(hf_config) -> None:
    arch = hf_config.model_type
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedModelError(
            f"model_type {arch!r} is not supported; the engine serves {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    if getattr(hf_config, "hidden_act", "silu") != "silu":
        raise UnsupportedModelError(f"hidden_act {hf_config.hidden_act!r} is not supported (only silu)")
    rope = getattr(hf_config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") not in _STATIC_ROPE_TYPES:
        raise UnsupportedModelError(f"rope_type {rope.get('rope_type')!r} is not supported ({_STATIC_ROPE_TYPES})")


def _sliding_windows(hf_config) -> tuple[int | None, ...]:
    window = getattr(hf_config, "sliding_window", None)
    layer_types = getattr(hf_config, "layer_types", None)
    if layer_types is not None:
        return tuple(window if kind == "sliding_attention" else None for kind in layer_types)
    return (window,) * hf_config.num_hidden_layers


def _eos_ids(hf_model) -> tuple[int, ...]:
    eos = hf_model.generation_config.eos_token_id
    if eos is None:
        eos = hf_model.config.eos_token_id
    if eos is None:
        return ()
    return tuple(eos) if isinstance(eos, (list, tuple)) else (eos,)


def _load_hf(config: EngineConfig, dtype: torch.dtype, device: torch.device):
    from transformers import AutoModelForCausalLM

    kwargs: dict = {"dtype": dtype}
    if config.quantize == "nf4":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype
        )
        kwargs["device_map"] = {"": device}
    model = AutoModelForCausalLM.from_pretrained(config.model_path, **kwargs)
    if config.quantize is None:
        model = model.to(device)
    return model.eval()


def load_base_model(config: EngineConfig) -> BaseModel:
    """Read config.json, refuse unsupported architectures, then load and unpack the weights."""
    from transformers import AutoConfig

    hf_config = AutoConfig.from_pretrained(config.model_path)
    _check_supported(hf_config)
    dtype, device = _DTYPES[config.dtype], resolve_device(config.device)
    hf_model = _load_hf(config, dtype, device)
    c = hf_model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    max_model_len = config.max_model_len or min(c.max_position_embeddings, _MAX_DEFAULT_MODEL_LEN)
    spec = ModelSpec(
        arch=c.model_type,
        num_layers=c.num_hidden_layers,
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
        num_heads=c.num_attention_heads,
        num_kv_heads=c.num_key_value_heads,
        head_dim=head_dim,
        vocab_size=c.vocab_size,
        max_position_embeddings=c.max_position_embeddings,
        sliding_windows=_sliding_windows(c),
        eos_token_ids=_eos_ids(hf_model),
    )
    inner = hf_model.model
    layers = []
    for layer in inner.layers:
        blocks = {"self_attn": layer.self_attn, "mlp": layer.mlp}
        projections = {}
        for name in PROJECTIONS:
            block = blocks["self_attn" if name in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"]
            projections[name] = getattr(block, name)
        layers.append(LayerWeights(layer.input_layernorm.weight, layer.post_attention_layernorm.weight, projections))
    positions = torch.arange(max_model_len, device=device)[None]  # [1, L]
    with torch.no_grad():
        cos, sin = inner.rotary_emb(torch.zeros((), dtype=dtype, device=device), positions)  # [1, L, D]
    return BaseModel(
        spec=spec,
        embed=inner.embed_tokens.weight,
        layers=layers,
        final_norm=inner.norm.weight,
        lm_head=hf_model.lm_head.weight,
        rope_cos=cos[0],
        rope_sin=sin[0],
        rms_norm_eps=c.rms_norm_eps,
        dtype=dtype,
        device=device,
        max_model_len=max_model_len,
    )
