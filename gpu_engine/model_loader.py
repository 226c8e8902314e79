"""Load a local checkpoint of a served family into plain tensors, norm functions and projection modules.

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
from gpu_engine.families.block_shape import BlockShape, block_shape
from gpu_engine.families.layers import Norm, make_norm
from gpu_engine.families.registry import SUPPORTED_ARCHITECTURES, Family, family_for
from gpu_engine.model_spec import ModelSpec

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_STATIC_ROPE_TYPES = ("default", "linear", "llama3", "yarn")
# rope types whose tables are static only up to original_max_position_embeddings (then HF switches factors)
_SHORT_ROPE_TYPES = ("longrope",)
_MAX_DEFAULT_MODEL_LEN = 4096
_DEFAULT_ROPE = "default"  # the one rotary table of a family without per-layer-type tables


@dataclass
class LayerWeights:
    """One decoder layer. Projections are callables x: [T, in] -> [T, out] (dense or NF4, bias included);
    a norm the family does not have is `identity`."""

    input_norm: Norm
    attn_out_norm: Norm
    pre_mlp_norm: Norm
    mlp_out_norm: Norm
    q_norm: Norm  # per head, over head_dim
    k_norm: Norm
    projections: dict[str, nn.Module]  # the family's projections, by module name
    rope: str  # key of this layer's rotary table in BaseModel.rope_tables


@dataclass
class BaseModel:
    """Everything the forward pass reads; produced once at start-up."""

    spec: ModelSpec
    family: Family
    shape: BlockShape
    embed: torch.Tensor  # [V, H]
    embed_scale: torch.Tensor | None  # scalar in the model dtype (Gemma: sqrt(H)), or None
    layers: list[LayerWeights]
    final_norm: Norm
    lm_head: torch.Tensor  # [V, H]
    lm_head_bias: torch.Tensor | None  # [V] (Phi-2)
    final_softcap: float | None  # Gemma 2's final logit soft-cap
    rope_tables: dict[str, tuple[torch.Tensor, torch.Tensor]]  # kind -> (cos, sin) [max_model_len, R]
    dtype: torch.dtype
    device: torch.device
    max_model_len: int


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def _family(hf_config) -> Family:
    """The checkpoint's family, or UnsupportedModelError naming what is served."""
    family = family_for(hf_config.model_type)
    if family is None:
        served = ", ".join(SUPPORTED_ARCHITECTURES)
        raise UnsupportedModelError(f"model_type {hf_config.model_type!r} is not supported; the engine serves {served}")
    for params in _rope_params(hf_config, family):
        rope_type = params.get("rope_type", "default")
        if rope_type not in _STATIC_ROPE_TYPES + _SHORT_ROPE_TYPES:
            raise UnsupportedModelError(
                f"rope_type {rope_type!r} is not supported ({_STATIC_ROPE_TYPES + _SHORT_ROPE_TYPES})"
            )
    return family


def _rope_params(hf_config, family: Family) -> list[dict]:
    rope = getattr(hf_config, "rope_parameters", None) or {}
    return [p or {} for p in rope.values()] if family.rope_per_layer_type else [rope]


def _max_model_len(config: EngineConfig, hf_config, family: Family) -> int:
    """The configured length, or the model's capped at 4096 — and for longrope (Phi-3.5, Phi-4-mini) at most
    original_max_position_embeddings, past which HF switches to its long factors mid-sequence."""
    limit = hf_config.max_position_embeddings
    for params in _rope_params(hf_config, family):
        if params.get("rope_type") in _SHORT_ROPE_TYPES:
            short = params.get("original_max_position_embeddings") or hf_config.original_max_position_embeddings
            if config.max_model_len is not None and config.max_model_len > short:
                raise UnsupportedModelError(
                    f"rope_type {params['rope_type']!r} is served up to original_max_position_embeddings={short};"
                    f" max_model_len {config.max_model_len} is longer"
                )
            limit = min(limit, short)
    return config.max_model_len or min(limit, _MAX_DEFAULT_MODEL_LEN)


def _activation(hf_config, family: Family):
    from transformers.activations import ACT2FN

    name = getattr(hf_config, family.activation_key, None)
    if name not in ACT2FN:
        raise UnsupportedModelError(f"{family.activation_key} {name!r} is not a known activation")
    return ACT2FN[name]


def _sliding_windows(hf_config) -> tuple[int | None, ...]:
    window = getattr(hf_config, "sliding_window", None)
    layer_types = getattr(hf_config, "layer_types", None)
    if layer_types is not None:
        return tuple(window if kind == "sliding_attention" else None for kind in layer_types)
    return (window,) * hf_config.num_hidden_layers


def _eos_ids(hf_model) -> tuple[int, ...]:
    """Every end-of-sequence id: the union of config.json's and generation_config.json's (each an
    int, a list or null), e.g. Llama 3 instruct's <|end_of_text|> and <|eot_id|>."""
    found: list[int] = []
    for eos in (getattr(hf_model.config, "eos_token_id", None), hf_model.generation_config.eos_token_id):
        if eos is None:
            continue
        for token_id in eos if isinstance(eos, (list, tuple)) else (eos,):
            if token_id not in found:
                found.append(token_id)
    return tuple(found)


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


def _rope_tables(hf_model, family: Family, max_model_len: int, dtype, device) -> dict[str, tuple]:
    """cos/sin for every position, from the model's own rotary module (one per layer type for Gemma 3)."""
    rotary = hf_model.model.rotary_emb
    positions = torch.arange(max_model_len, device=device)[None]  # [1, L]
    probe = torch.zeros((), dtype=dtype, device=device)
    kinds = sorted(set(hf_model.config.layer_types)) if family.rope_per_layer_type else [_DEFAULT_ROPE]
    tables = {}
    with torch.no_grad():
        for kind in kinds:
            cos, sin = rotary(probe, positions, kind) if family.rope_per_layer_type else rotary(probe, positions)
            tables[kind] = (cos[0], sin[0])  # [L, R]
    return tables


def _layer(hf_layer, family: Family, rope: str) -> LayerWeights:
    attn, mlp = hf_layer.self_attn, hf_layer.mlp

    def norm(owner, name: str | None):
        return make_norm(family.norm, None if name is None else getattr(owner, name, None))

    q_norm, k_norm = family.qk_norms or (None, None)
    projections = {name: getattr(attn, name) for name in family.attention_projections}
    projections.update({name: getattr(mlp, name) for name in family.mlp_projections})
    return LayerWeights(
        input_norm=norm(hf_layer, family.input_norm),
        attn_out_norm=norm(hf_layer, family.attn_out_norm),
        pre_mlp_norm=norm(hf_layer, family.pre_mlp_norm),
        mlp_out_norm=norm(hf_layer, family.mlp_out_norm),
        q_norm=norm(attn, q_norm),
        k_norm=norm(attn, k_norm),
        projections=projections,
        rope=rope,
    )


def load_base_model(config: EngineConfig) -> BaseModel:
    """Read config.json, refuse unsupported architectures, then load and unpack the weights."""
    from transformers import AutoConfig

    family = _family(AutoConfig.from_pretrained(config.model_path))
    dtype, device = _DTYPES[config.dtype], resolve_device(config.device)
    hf_model = _load_hf(config, dtype, device)
    c = hf_model.config
    activation = _activation(c, family)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    max_model_len = _max_model_len(config, c, family)
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
        attention_projections=family.attention_projections,
        mlp_projections=family.mlp_projections,
    )
    inner = hf_model.model
    layer_ropes = c.layer_types if family.rope_per_layer_type else [_DEFAULT_ROPE] * c.num_hidden_layers
    embed_scale = torch.tensor(c.hidden_size**0.5, dtype=dtype, device=device) if family.scaled_embeddings else None
    return BaseModel(
        spec=spec,
        family=family,
        shape=block_shape(family, c, head_dim, activation),
        embed=inner.embed_tokens.weight,
        embed_scale=embed_scale,
        layers=[_layer(layer, family, rope) for layer, rope in zip(inner.layers, layer_ropes)],
        final_norm=make_norm(family.norm, getattr(inner, family.final_norm)),
        lm_head=hf_model.lm_head.weight,
        lm_head_bias=hf_model.lm_head.bias,
        final_softcap=getattr(c, "final_logit_softcapping", None),
        rope_tables=_rope_tables(hf_model, family, max_model_len, dtype, device),
        dtype=dtype,
        device=device,
        max_model_len=max_model_len,
    )
