"""Attention over the paged KV cache for one mixed step (decodes and prefill chunks together).

Two batched calls per layer, whatever the number of sequences: every single-row sequence
(decodes) in one SDPA call, every multi-row sequence (prefill chunks, padded to the longest) in
another. Each reads its sequences' keys/values through their block tables (`KVCache.gather`:
on the CPU a gathered copy; the cache's layout is the one paged flash kernels take). Masks are
additive float masks ([G, 1, n, K], 0 or -inf — the form SDPA's fused kernels accept), built
on the device once per step and window from the uploaded positions and shared by every layer;
a padded query row sees key 0 only (its output is dropped). Attention logits are scaled by
`scale`; with a soft-cap (Gemma 2) they are capped before the mask and softmax, which SDPA
cannot do, so those layers run the same math eagerly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from gpu_engine.families.layers import soft_cap
from gpu_engine.kv_cache import KVCache
from gpu_engine.step_buffers import StepTensors


def window_mask(q_pos: torch.Tensor, num_keys: int, window: int | None, dtype: torch.dtype) -> torch.Tensor:
    """q_pos: [..., n] query positions -> additive mask [..., n, K]: 0 where key j is visible to the
    query (j <= position, within the sliding window), -inf elsewhere."""
    keys = torch.arange(num_keys, device=q_pos.device)  # [K]
    pos = q_pos[..., None]  # [..., n, 1]
    visible = keys <= pos
    if window is not None:
        visible &= keys > pos - window
    return torch.zeros(visible.shape, dtype=dtype, device=q_pos.device).masked_fill_(~visible, float("-inf"))


class AttentionPlan:
    """Masks and block tables of one step, built once on the device and shared by every layer."""

    def __init__(self, tensors: StepTensors, windows: Sequence[int | None], block_size: int, dtype: torch.dtype) -> None:
        shape = tensors.shape
        self.tensors = tensors
        self.num_rows = shape.num_rows
        self.num_decodes = shape.num_decodes
        self.num_prefills = shape.num_prefills
        self.decode_rows_are_all_rows = shape.decode_rows_are_all_rows
        self.decode_masks: dict[int | None, torch.Tensor] = {}
        self.prefill_masks: dict[int | None, torch.Tensor] = {}
        for window in set(windows):
            if self.num_decodes:
                keys = shape.decode_table_len * block_size
                self.decode_masks[window] = window_mask(tensors.decode_pos[:, None], keys, window, dtype)[:, None]  # [B, 1, 1, K]
            if self.num_prefills:
                keys = shape.prefill_table_len * block_size
                self.prefill_masks[window] = window_mask(tensors.prefill_pos, keys, window, dtype)[:, None]  # [P, 1, n, K]


def _attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float, softcap: float | None
) -> torch.Tensor:
    """q: [G, H, n, D], k/v: [G, KVH, K, D], mask: additive [G, 1, n, K] -> [G, H, n, D]."""
    gqa = q.shape[1] != k.shape[1]
    if softcap is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)  # [G, H, K, D]
    scores = soft_cap(torch.matmul(q, k.transpose(2, 3)) * scale, softcap) + mask  # [G, H, n, K]
    return torch.matmul(torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype), v)


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_cache: KVCache, layer: int, plan: AttentionPlan,
    window: int | None, scale: float, softcap: float | None = None,
) -> torch.Tensor:
    """q: [T, H, D], k/v: [T, KVH, D] (rotary applied) -> attention output [T, H, D].

    Writes k/v into the cache first, so every query sees its own token. `scale` multiplies q @ k.T;
    `softcap`, if set, caps the scaled logits (softcap * tanh(logit / softcap)).
    """
    t = plan.tensors
    kv_cache.write(layer, t.kv_rows, k, v)
    num_rows, num_heads, head_dim = q.shape
    if plan.decode_rows_are_all_rows:
        keys, values = kv_cache.gather(layer, t.decode_tables)
        o = _attention(q[:, :, None], keys, values, plan.decode_masks[window], scale, softcap)  # [T, H, 1, D]
        return o[:, :, 0]
    out = q.new_empty(num_rows + 1, num_heads, head_dim)  # the last row takes padded prefill rows
    if plan.num_decodes:
        keys, values = kv_cache.gather(layer, t.decode_tables)
        q_dec = q.index_select(0, t.decode_rows)[:, :, None]  # [B, H, 1, D]
        o = _attention(q_dec, keys, values, plan.decode_masks[window], scale, softcap)
        out.index_copy_(0, t.decode_rows, o[:, :, 0])
    if plan.num_prefills:
        num_seqs, n = t.prefill_pos.shape
        keys, values = kv_cache.gather(layer, t.prefill_tables)
        q_pre = q.index_select(0, t.prefill_src).view(num_seqs, n, num_heads, head_dim).transpose(1, 2)  # [P, H, n, D]
        o = _attention(q_pre, keys, values, plan.prefill_masks[window], scale, softcap)  # [P, H, n, D]
        out.index_copy_(0, t.prefill_dst, o.transpose(1, 2).reshape(num_seqs * n, num_heads, head_dim))
    return out[:num_rows]
