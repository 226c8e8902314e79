"""Attention over the slot KV cache for one mixed step (decodes and prefill chunks together).

Single-row sequences (decodes) are batched into one SDPA call that reads the cache slot range
[slot_lo, slot_hi] in place; a slot in that range with no decode this step gets a zero query
and a one-key mask (its output is discarded). Multi-row sequences (prefill chunks) attend one
by one to their slot's prefix with a causal mask offset by the chunk's start position.
Attention logits are scaled by `scale`; with a soft-cap (Gemma 2) they are capped before the mask
and softmax, which SDPA cannot do, so those layers run the same math eagerly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gpu_engine.families.layers import soft_cap
from gpu_engine.kv_cache import KVCache


@dataclass(frozen=True)
class SeqChunk:
    """One sequence's rows in a step: rows [row_start, row_start+num_rows) at positions from start_pos."""

    row_start: int
    num_rows: int
    kv_slot: int
    start_pos: int


def _window_mask(q_pos: torch.Tensor, num_keys: int, window: int | None) -> torch.Tensor:
    """mask[i, j]: query at position q_pos[i] may see key j (causal, within the sliding window)."""
    keys = torch.arange(num_keys, device=q_pos.device)[None]  # [1, K]
    mask = keys <= q_pos[:, None]
    if window is not None:
        mask &= keys > q_pos[:, None] - window
    return mask  # [Q, K]


class AttentionPlan:
    """Index tensors and masks for one step, built once and shared by every layer."""

    def __init__(
        self, chunks: Sequence[SeqChunk], windows: Sequence[int | None], kv_cache: KVCache, device: torch.device
    ) -> None:
        slots, positions = [], []
        for c in chunks:
            slots += [c.kv_slot] * c.num_rows
            positions += range(c.start_pos, c.start_pos + c.num_rows)
        slot_ids = torch.tensor(slots, dtype=torch.long, device=device)  # [T]
        position_ids = torch.tensor(positions, dtype=torch.long, device=device)  # [T]
        self.kv_rows = kv_cache.row_index(slot_ids, position_ids)  # [T * KVH]
        decodes = [c for c in chunks if c.num_rows == 1]
        self.prefills = [c for c in chunks if c.num_rows > 1]
        self.prefill_masks: dict[tuple[int, int | None], torch.Tensor | None] = {}
        for i, c in enumerate(self.prefills):
            end = c.start_pos + c.num_rows
            for window in set(windows):
                if c.start_pos == 0 and (window is None or window >= end):
                    self.prefill_masks[(i, window)] = None  # plain causal
                else:
                    q_pos = torch.arange(c.start_pos, end, device=device)
                    self.prefill_masks[(i, window)] = _window_mask(q_pos, end, window)
        self.num_decodes = len(decodes)
        if not decodes:
            return
        self.slot_lo = min(c.kv_slot for c in decodes)
        slot_hi = max(c.kv_slot for c in decodes)
        num_range = slot_hi - self.slot_lo + 1
        rows = [c.row_start for c in decodes]
        offsets = [c.kv_slot - self.slot_lo for c in decodes]
        self.decode_dense = num_range == len(decodes) and offsets == list(range(num_range)) and rows == list(
            range(rows[0], rows[0] + num_range)
        )
        self.decode_row_start = rows[0]
        self.decode_rows = torch.tensor(rows, dtype=torch.long, device=device)  # [B]
        self.decode_offsets = torch.tensor(offsets, dtype=torch.long, device=device)  # [B]
        last_pos = torch.zeros(num_range, dtype=torch.long, device=device)  # idle slots: key 0 only
        last_pos[self.decode_offsets] = torch.tensor([c.start_pos for c in decodes], device=device)
        self.decode_len = max(c.start_pos for c in decodes) + 1
        self.decode_num_range = num_range
        self.decode_masks = {
            w: _window_mask(last_pos, self.decode_len, w)[:, None, None, :] for w in set(windows)
        }  # [R, 1, 1, K]


def _attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float, softcap: float | None
) -> torch.Tensor:
    """q: [B, H, n, D], k/v: [B, KVH, K, D], mask: bool [..., n, K] or None (causal, queries last) -> [B, H, n, D]."""
    gqa = q.shape[1] != k.shape[1]
    if softcap is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, scale=scale,
                                              enable_gqa=gqa)
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)  # [B, H, K, D]
    scores = soft_cap(torch.matmul(q, k.transpose(2, 3)) * scale, softcap)  # [B, H, n, K]
    if mask is None:
        n, num_keys = q.shape[2], k.shape[2]
        mask = torch.ones(n, num_keys, dtype=torch.bool, device=q.device).tril(num_keys - n)
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.matmul(torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype), v)


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_cache: KVCache, layer: int, plan: AttentionPlan,
    window: int | None, scale: float, softcap: float | None = None,
) -> torch.Tensor:
    """q: [T, H, D], k/v: [T, KVH, D] (rotary applied) -> attention output [T, H, D].

    Writes k/v into the cache first, so every query sees its own token. `scale` multiplies q @ k.T;
    `softcap`, if set, caps the scaled logits (softcap * tanh(logit / softcap)).
    """
    kv_cache.write(layer, plan.kv_rows, k, v)
    num_heads = q.shape[1]
    out = torch.empty_like(q)
    k_layer, v_layer = kv_cache.k[layer], kv_cache.v[layer]  # [S, KVH, L, D]
    if plan.num_decodes:
        lo, hi = plan.slot_lo, plan.slot_lo + plan.decode_num_range
        keys = k_layer[lo:hi, :, : plan.decode_len]  # [R, KVH, K, D], a view
        values = v_layer[lo:hi, :, : plan.decode_len]
        if plan.decode_dense:
            r0 = plan.decode_row_start
            q_range = q[r0 : r0 + plan.decode_num_range].unsqueeze(2)  # [R, H, 1, D]
        else:
            q_range = q.new_zeros(plan.decode_num_range, num_heads, 1, q.shape[2])
            q_range[plan.decode_offsets, :, 0] = q[plan.decode_rows]
        o = _attention(q_range, keys, values, plan.decode_masks[window], scale, softcap)  # [R, H, 1, D]
        if plan.decode_dense:
            out[r0 : r0 + plan.decode_num_range] = o[:, :, 0]
        else:
            out[plan.decode_rows] = o[plan.decode_offsets, :, 0]
    for i, c in enumerate(plan.prefills):
        end = c.start_pos + c.num_rows
        q_chunk = q[c.row_start : c.row_start + c.num_rows].transpose(0, 1)[None]  # [1, H, n, D]
        keys = k_layer[c.kv_slot : c.kv_slot + 1, :, :end]  # [1, KVH, end, D]
        values = v_layer[c.kv_slot : c.kv_slot + 1, :, :end]
        mask = plan.prefill_masks[(i, window)]
        o = _attention(q_chunk, keys, values, mask, scale, softcap)  # [1, H, n, D]
        out[c.row_start : c.row_start + c.num_rows] = o[0].transpose(0, 1)
    return out
