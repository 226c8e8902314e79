"""Slot-based KV cache: one fixed row of `max_model_len` positions per running request.

k/v: [num_layers, num_slots, num_kv_heads, max_model_len, head_dim]. A request keeps its slot
from admission to finish, so nothing is ever recomputed or moved; decode attention reads the
slot range in place (see attention.py). Which slot is free is `slots.py`'s bookkeeping.
"""

from __future__ import annotations

import torch

from gpu_engine.model_spec import ModelSpec


def kv_cache_bytes(spec: ModelSpec, num_slots: int, max_model_len: int, dtype: torch.dtype) -> int:
    element_bytes = torch.empty((), dtype=dtype).element_size()
    return 2 * spec.num_layers * num_slots * spec.num_kv_heads * max_model_len * spec.head_dim * element_bytes


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

    def write(
        self, layer: int, slots: torch.Tensor, positions: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> None:
        """Store the step's keys/values. slots, positions: [T]; k, v: [T, KVH, D]."""
        self.k[layer][slots, :, positions] = k
        self.v[layer][slots, :, positions] = v
