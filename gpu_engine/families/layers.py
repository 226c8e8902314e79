"""The small torch pieces every block shape shares: norms, rotary embedding, soft-capping.

Each norm is computed exactly as the family's HF module computes it (which dtype, in which
order), so fp32 logits match the reference to rounding and bf16 ones round alike.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

Norm = Callable[[torch.Tensor], torch.Tensor]  # x: [..., H] -> [..., H]


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Llama: normalized in fp32, cast back, then times w."""
    x32 = x.to(torch.float32)
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(x.dtype)


def rms_norm_offset(x: torch.Tensor, scale32: torch.Tensor, eps: float) -> torch.Tensor:
    """Gemma: normalized and scaled by (1 + w) in fp32, then cast back. `scale32` is 1 + w in fp32."""
    x32 = x.to(torch.float32)
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return (x32 * scale32).to(x.dtype)


def make_norm(kind: str, module: nn.Module | None) -> Norm:
    """The norm an HF module computes, as a function of x; `identity` where the layer has none."""
    if module is None:
        return identity
    if kind == "layer":
        return partial(F.layer_norm, normalized_shape=module.normalized_shape, weight=module.weight,
                       bias=module.bias, eps=module.eps)
    eps = module.variance_epsilon if hasattr(module, "variance_epsilon") else module.eps
    if kind == "rms_offset":
        return partial(rms_norm_offset, scale32=1.0 + module.weight.detach().float(), eps=eps)
    return partial(rms_norm, weight=module.weight, eps=eps)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [T, heads, D], cos/sin: [T, R] with R <= D: the first R dims rotate, the rest pass (partial rotary)."""
    rotary_dim = cos.shape[-1]
    if rotary_dim == x.shape[-1]:
        return x * cos[:, None] + rotate_half(x) * sin[:, None]
    x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
    return torch.cat((x_rot * cos[:, None] + rotate_half(x_rot) * sin[:, None], x_pass), dim=-1)


def soft_cap(x: torch.Tensor, cap: float | None) -> torch.Tensor:
    """cap * tanh(x / cap) (Gemma 2's logit soft-capping); x unchanged when cap is None."""
    if cap is None:
        return x
    return torch.tanh(x / cap) * cap
