"""LoraBank: device-resident LoRA weights packed by rank, one slot per loaded adapter.

Each rank bucket holds, per (layer, projection) that any of its adapters targets, a stacked
A buffer [capacity, rank, in] and B buffer [capacity, rank, out] (scale folded into B). A slot
whose adapter does not target a projection holds zeros there, so its delta is exactly zero.
Adapters of different ranks never share a bucket, so no adapter is padded to another's rank.

Which adapters stay packed is device_cache.py's job: it calls `add`/`remove` and `reserve`s a
bucket's capacity from its byte budget, so growing (a copy of the whole bucket) stays rare.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from gpu_engine.adapters import LoraAdapter
from gpu_engine.model_spec import ModelSpec
from gpu_engine.segments import BankSlot

_INITIAL_CAPACITY = 4


@dataclass
class RankBucket:
    """All slots of one rank. `a`/`b` are keyed by (layer, projection)."""

    rank: int
    capacity: int
    a: dict[tuple[int, str], torch.Tensor] = field(default_factory=dict)  # [capacity, rank, in]
    b: dict[tuple[int, str], torch.Tensor] = field(default_factory=dict)  # [capacity, rank, out]
    targets: list[frozenset[tuple[int, str]]] = field(default_factory=list)  # per slot
    free_slots: list[int] = field(default_factory=list)


class LoraBank:
    """Owns the packed weights; `add` returns the (rank, slot) key the step uses to find them."""

    def __init__(self, spec: ModelSpec, dtype: torch.dtype, device: torch.device) -> None:
        self.spec = spec
        self.dtype = dtype
        self.device = device
        self.buckets: dict[int, RankBucket] = {}

    @property
    def num_bytes(self) -> int:
        return sum(t.nbytes for bucket in self.buckets.values() for t in (*bucket.a.values(), *bucket.b.values()))

    def capacities(self) -> dict[int, int]:
        return {rank: bucket.capacity for rank, bucket in self.buckets.items()}

    def reserve(self, rank: int, capacity: int) -> None:
        """Make the rank bucket hold at least `capacity` slots (one allocation, no doubling steps)."""
        bucket = self._bucket(rank)
        if bucket.capacity < capacity:
            self._grow(bucket, capacity)

    def add(self, adapter: LoraAdapter) -> BankSlot:
        """Copy the adapter into a free slot (asynchronously from pinned host memory on CUDA)."""
        bucket = self._bucket(adapter.rank)
        if not bucket.free_slots:
            self._grow(bucket, max(_INITIAL_CAPACITY, 2 * bucket.capacity))
        slot = bucket.free_slots.pop()
        for key, weights in adapter.weights.items():
            if key not in bucket.a:
                in_features, out_features = self.spec.projection_shape(key[1])
                bucket.a[key] = self._zeros(bucket.capacity, bucket.rank, in_features)
                bucket.b[key] = self._zeros(bucket.capacity, bucket.rank, out_features)
            bucket.a[key][slot].copy_(weights.a, non_blocking=True)
            bucket.b[key][slot].copy_(weights.b_t, non_blocking=True)
        bucket.targets[slot] = frozenset(adapter.weights)
        return (adapter.rank, slot)

    def remove(self, key: BankSlot) -> None:
        rank, slot = key
        bucket = self.buckets[rank]
        for target in bucket.targets[slot]:
            bucket.a[target][slot].zero_()
            bucket.b[target][slot].zero_()
        bucket.targets[slot] = frozenset()
        bucket.free_slots.append(slot)

    def _bucket(self, rank: int) -> RankBucket:
        bucket = self.buckets.get(rank)
        if bucket is None:
            bucket = RankBucket(rank=rank, capacity=0)
            self.buckets[rank] = bucket
        return bucket

    def _zeros(self, *shape: int) -> torch.Tensor:
        return torch.zeros(shape, dtype=self.dtype, device=self.device)

    def _grow(self, bucket: RankBucket, new: int) -> None:
        old = bucket.capacity
        for stacks in (bucket.a, bucket.b):
            for key, tensor in stacks.items():
                grown = self._zeros(new, *tensor.shape[1:])
                grown[:old].copy_(tensor)
                stacks[key] = grown
        bucket.capacity = new
        bucket.targets.extend(frozenset() for _ in range(new - old))
        bucket.free_slots.extend(range(new - 1, old - 1, -1))  # pop() hands out the lowest slot first
