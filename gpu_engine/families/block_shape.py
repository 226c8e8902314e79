"""BlockShape: a family's facts combined with one checkpoint's config.json, ready for the blocks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from gpu_engine.families.registry import Family, unfused_parts


@dataclass(frozen=True)
class BlockShape:
    """What the block functions read, per loaded model. Sizes are the output widths of each part."""

    attention_inputs: tuple[str, ...]  # ("q_proj", "k_proj", "v_proj") or ("qkv_proj",)
    attention_output: str
    qkv_sizes: tuple[int, int, int]
    mlp_inputs: tuple[str, ...]  # ("gate_proj", "up_proj"), ("gate_up_proj",) or ("fc1",)
    mlp_output: str
    mlp_sizes: tuple[int, ...]  # (I, I) gated, (I,) not
    gated_mlp: bool
    activation: Callable[[torch.Tensor], torch.Tensor]
    attention_scale: float  # multiplies q @ k.T
    attn_softcap: float | None  # Gemma 2's attention logit soft-cap


def block_shape(family: Family, hf_config, head_dim: int, activation: Callable) -> BlockShape:
    """Read the per-checkpoint values (scale, soft-cap) and the family's projection layout."""
    c = hf_config
    q_size, kv_size = c.num_attention_heads * head_dim, c.num_key_value_heads * head_dim
    mlp_inputs = family.mlp_projections[:-1]
    query_pre_attn_scalar = getattr(c, "query_pre_attn_scalar", None)  # Gemma 2/3 scale by this, not head_dim
    return BlockShape(
        attention_inputs=family.attention_projections[:-1],
        attention_output=family.attention_projections[-1],
        qkv_sizes=(q_size, kv_size, kv_size),
        mlp_inputs=mlp_inputs,
        mlp_output=family.mlp_projections[-1],
        mlp_sizes=(c.intermediate_size,) * len(unfused_parts(mlp_inputs)),
        gated_mlp=family.gated_mlp,
        activation=activation,
        attention_scale=(query_pre_attn_scalar or head_dim) ** -0.5,
        attn_softcap=getattr(c, "attn_logit_softcapping", None),
    )
