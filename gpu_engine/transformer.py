"""The forward pass of the Llama family over one packed step. Pure torch; knows nothing of requests.

Every projection runs once over all T rows of the step (base weights), then the segmented LoRA
delta is added in place; attention goes through the slot KV cache.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gpu_engine.attention import AttentionPlan, attend
from gpu_engine.kv_cache import KVCache
from gpu_engine.lora_ops import LoraStep
from gpu_engine.model_loader import BaseModel


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x: [T, H]. Computed in fp32 and cast back, as the HF reference does."""
    x32 = x.to(torch.float32)
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [T, heads, D], cos/sin: [T, D]."""
    return x * cos[:, None] + rotate_half(x) * sin[:, None]


def forward(
    model: BaseModel,
    kv_cache: KVCache,
    input_ids: torch.Tensor,
    positions: torch.Tensor,
    plan: AttentionPlan,
    lora: LoraStep,
    sample_rows: torch.Tensor,
) -> torch.Tensor:
    """input_ids, positions: [T]; sample_rows: [B] rows whose next token is wanted -> logits [B, V] fp32."""
    spec, eps = model.spec, model.rms_norm_eps
    num_rows = input_ids.shape[0]
    h = F.embedding(input_ids, model.embed)  # [T, H]
    cos, sin = model.rope_cos[positions], model.rope_sin[positions]  # [T, D]

    def project(layer: int, name: str, x: torch.Tensor) -> torch.Tensor:
        y = model.layers[layer].projections[name](x)  # [T, out]
        lora.apply(y, x, layer, name)
        return y

    for i, layer in enumerate(model.layers):
        x = rms_norm(h, layer.input_norm, eps)
        q = project(i, "q_proj", x).view(num_rows, spec.num_heads, spec.head_dim)
        k = project(i, "k_proj", x).view(num_rows, spec.num_kv_heads, spec.head_dim)
        v = project(i, "v_proj", x).view(num_rows, spec.num_kv_heads, spec.head_dim)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        o = attend(q, k, v, kv_cache, i, plan, spec.sliding_windows[i])  # [T, H, D]
        h = h + project(i, "o_proj", o.reshape(num_rows, -1))
        x = rms_norm(h, layer.post_attention_norm, eps)
        mlp = F.silu(project(i, "gate_proj", x)) * project(i, "up_proj", x)
        h = h + project(i, "down_proj", mlp)
    last = rms_norm(h[sample_rows], model.final_norm, eps)  # [B, H]
    return (last @ model.lm_head.t()).float()  # [B, V]
