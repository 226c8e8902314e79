"""Slot-based KV cache: one fixed row of `max_model_len` positions per running request.

k/v: [num_layers, num_slots, num_kv_heads, max_model_len, head_dim]. A request keeps its slot
from admission to finish, so nothing is ever recomputed or moved; decode attention reads the
slot range in place (see attention.py). Which slot is free is `slots.py`'s bookkeeping.
"""

from __future__ import annotations

import torch

from gpu_engine.model_spec import ModelSpec


class KVCache:
    def __init__(
        self, spec: ModelSpec, num_slots: int, max_model_len: int, dtype: torch.dtype, device: torch.device
    ) -> None:
        shape = (spec.num_layers, num_slots, spec.num_kv_heads, max_model_len, spec.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.num_slots = num_slots
        self.max_model_len = max_model_len

    @property
    def num_bytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def row_index(self, slots: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rows of a layer's cache seen as [S * KVH * L, D] for tokens at (slot, position): [T * KVH]."""
        num_kv_heads = self.k.shape[2]
        heads = torch.arange(num_kv_heads, device=slots.device)[None]  # [1, KVH]
        return ((slots[:, None] * num_kv_heads + heads) * self.max_model_len + positions[:, None]).reshape(-1)

    def write(self, layer: int, rows: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store the step's keys/values. rows: from row_index, [T * KVH]; k, v: [T, KVH, D]."""
        head_dim = k.shape[-1]
        self.k[layer].view(-1, head_dim).index_copy_(0, rows, k.reshape(-1, head_dim))
        self.v[layer].view(-1, head_dim).index_copy_(0, rows, v.reshape(-1, head_dim))
