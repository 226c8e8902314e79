"""LoraBank: device-resident LoRA weights packed by rank, one slot per loaded adapter.

Each rank bucket holds, per (layer, projection) that any of its adapters targets, a stacked
A buffer [capacity, rank, in] and B buffer [capacity, rank, out] (scale folded into B). A slot
whose adapter does not target a projection holds zeros there, so its delta is exactly zero.
Adapters of different ranks never share a bucket, so no adapter is padded to another's rank.

Memory is what the buffers hold (`num_bytes`): capacity × rank × Σ(in + out) × element size per
bucket. `add(adapter, max_bytes)` grows a full bucket by doubling, as far as `max_bytes` allows,
and refuses (DeviceBudgetError, the bank unchanged) when even one more slot, or the buffers of a
projection new to the bucket, would go over it — or when the device is out of memory. `trim`
gives back what no resident adapter uses (buckets, projections, trailing free slots), and
`footprint` says, without allocating, what the bank would hold with only some slots kept.
Which adapters stay packed is device_cache.py's job.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from gpu_engine.adapter_upload import AdapterUpload
from gpu_engine.adapters import LoraAdapter
from gpu_engine.errors import DeviceBudgetError
from gpu_engine.model_spec import ModelSpec
from gpu_engine.segments import BankSlot

_INITIAL_CAPACITY = 4
ProjKey = tuple[int, str]  # (layer, projection)


@dataclass
class RankBucket:
    """All slots of one rank. `a`/`b` are keyed by (layer, projection)."""

    rank: int
    capacity: int
    a: dict[ProjKey, torch.Tensor] = field(default_factory=dict)  # [capacity, rank, in]
    b: dict[ProjKey, torch.Tensor] = field(default_factory=dict)  # [capacity, rank, out]
    targets: list[frozenset[ProjKey]] = field(default_factory=list)  # per slot; empty: a free slot
    free_slots: list[int] = field(default_factory=list)

    def lowest_free_slot(self) -> int | None:
        return min(self.free_slots, default=None)


class LoraBank:
    """Owns the packed weights; `add` returns the (rank, slot) key the step uses to find them."""

    def __init__(self, spec: ModelSpec, dtype: torch.dtype, device: torch.device) -> None:
        self.spec = spec
        self.dtype = dtype
        self.device = device
        self.buckets: dict[int, RankBucket] = {}
        self.kernel_buffers = None  # the Triton backend's reusable buffers (triton_lora.TritonBuffers)
        self.layout_version = 0  # bumped when any buffer is (re)allocated or freed: new addresses
        self.upload = AdapterUpload(device, dtype)  # host -> slot copies (one staged transfer per adapter)

    @property
    def num_bytes(self) -> int:
        """Bytes the bank's buffers hold on the device."""
        return sum(self._bucket_bytes(rank, bucket.capacity, bucket.a) for rank, bucket in self.buckets.items())

    def capacities(self) -> dict[int, int]:
        return {rank: bucket.capacity for rank, bucket in self.buckets.items()}

    def slot_bytes(self, rank: int, keys: Iterable[ProjKey]) -> int:
        """Bytes of one slot of a rank bucket holding buffers for `keys`."""
        size = torch.empty((), dtype=self.dtype).element_size()
        return rank * size * sum(sum(self.spec.projection_shape(proj)) for _, proj in keys)

    def footprint(self, keep: Iterable[BankSlot], adding: LoraAdapter | None = None) -> int:
        """Bytes the bank would hold, trimmed, with only the slots in `keep` occupied and then
        `adding` added at the lowest slot free among them (a pure computation, nothing allocated)."""
        slots: dict[int, set[int]] = {}
        keys: dict[int, set[ProjKey]] = {}
        for rank, slot in keep:
            slots.setdefault(rank, set()).add(slot)
            keys.setdefault(rank, set()).update(self.buckets[rank].targets[slot])
        if adding is not None:
            taken = slots.setdefault(adding.rank, set())
            taken.add(next(s for s in range(len(taken) + 1) if s not in taken))
            keys.setdefault(adding.rank, set()).update(adding.weights)
        return sum((max(taken) + 1) * self.slot_bytes(rank, keys[rank]) for rank, taken in slots.items())

    def add_bytes(self, adapter: LoraAdapter) -> int:
        """The least `add` allocates for `adapter` now: a projection new to its bucket, one more slot if full."""
        bucket = self.buckets.get(adapter.rank)
        if bucket is None:
            return self.slot_bytes(adapter.rank, adapter.weights)
        keys = set(bucket.a) | set(adapter.weights)
        capacity = bucket.capacity + (0 if bucket.free_slots else 1)
        current = self._bucket_bytes(adapter.rank, bucket.capacity, bucket.a)
        return capacity * self.slot_bytes(adapter.rank, keys) - current

    def add(self, adapter: LoraAdapter, max_bytes: int | None = None) -> BankSlot:
        """Copy the adapter into the lowest free slot (`upload`: one staged transfer, asynchronous on
        CUDA, the compute stream ordered after it); raises DeviceBudgetError (bank unchanged) when
        the buffers it needs would take the bank over `max_bytes`, or the device is out of memory."""
        bucket = self.buckets.get(adapter.rank) or RankBucket(rank=adapter.rank, capacity=0)
        keys = set(bucket.a) | set(adapter.weights)
        capacity = bucket.capacity if bucket.free_slots else self._grown_capacity(bucket, keys, adapter, max_bytes)
        if bucket.free_slots and max_bytes is not None and self.num_bytes + self.add_bytes(adapter) > max_bytes:
            raise self._over_budget(adapter, max_bytes)
        self._reallocate(bucket, capacity, keys)
        self.buckets[adapter.rank] = bucket
        slot = bucket.lowest_free_slot()
        bucket.free_slots.remove(slot)
        bucket.targets[slot] = frozenset(adapter.weights)
        targets = list(adapter.weights)
        sources = [t for key in targets for t in (adapter.weights[key].a, adapter.weights[key].b_t)]
        self.upload.write(self.slot_views((adapter.rank, slot), targets), sources)
        return (adapter.rank, slot)

    def slot_views(self, key: BankSlot, targets: Iterable[ProjKey]) -> list[torch.Tensor]:
        """The slot's A and B rows per target, in `targets` order: A, B, A, B, … (copy destinations)."""
        rank, slot = key
        bucket = self.buckets[rank]
        return [t for target in targets for t in (bucket.a[target][slot], bucket.b[target][slot])]

    def remove(self, key: BankSlot) -> None:
        rank, slot = key
        bucket = self.buckets[rank]
        for target in bucket.targets[slot]:
            bucket.a[target][slot].zero_()
            bucket.b[target][slot].zero_()
        bucket.targets[slot] = frozenset()
        bucket.free_slots.append(slot)

    def trim(self) -> int:
        """Free what no occupied slot uses: empty buckets, projections, trailing free slots. Returns bytes freed."""
        before = self.num_bytes
        for rank, bucket in list(self.buckets.items()):
            occupied = [slot for slot, targets in enumerate(bucket.targets) if targets]
            if not occupied:
                del self.buckets[rank]
                continue
            used = set().union(*(bucket.targets[slot] for slot in occupied))
            for key in [k for k in bucket.a if k not in used]:
                del bucket.a[key], bucket.b[key]
            capacity = max(occupied) + 1
            if capacity < bucket.capacity:
                for stacks in (bucket.a, bucket.b):
                    for key, tensor in stacks.items():
                        stacks[key] = tensor[:capacity].clone()
                del bucket.targets[capacity:]
                bucket.free_slots = [s for s in bucket.free_slots if s < capacity]
                bucket.capacity = capacity
        if self.num_bytes != before:
            self.layout_version += 1
        return before - self.num_bytes

    def _bucket_bytes(self, rank: int, capacity: int, keys: Iterable[ProjKey]) -> int:
        return capacity * self.slot_bytes(rank, keys)

    def _grown_capacity(
        self, bucket: RankBucket, keys: set[ProjKey], adapter: LoraAdapter, max_bytes: int | None
    ) -> int:
        """Double (at least _INITIAL_CAPACITY), as far as `max_bytes` allows; at least one more slot."""
        wanted = max(_INITIAL_CAPACITY, 2 * bucket.capacity)
        if max_bytes is None:
            return wanted
        others = self.num_bytes - self._bucket_bytes(bucket.rank, bucket.capacity, bucket.a)
        affordable = (max_bytes - others) // self.slot_bytes(bucket.rank, keys)
        if affordable < bucket.capacity + 1:
            raise self._over_budget(adapter, max_bytes)
        return min(wanted, affordable)

    def _over_budget(self, adapter: LoraAdapter, max_bytes: int) -> DeviceBudgetError:
        return DeviceBudgetError(
            f"adapter {adapter.adapter_id!r}: its LoRA bank slot needs {self.add_bytes(adapter)} more bytes;"
            f" the bank holds {self.num_bytes} of its {max_bytes}-byte device budget"
        )

    def _reallocate(self, bucket: RankBucket, capacity: int, keys: set[ProjKey]) -> None:
        """Buffers of `capacity` slots for every key: everything allocated before anything changes."""
        new_keys = [k for k in keys if k not in bucket.a]
        if capacity == bucket.capacity and not new_keys:
            return
        try:
            fresh = {
                key: (self._zeros(capacity, bucket.rank, self.spec.projection_shape(key[1])[0]),
                      self._zeros(capacity, bucket.rank, self.spec.projection_shape(key[1])[1]))
                for key in keys
                if key in new_keys or capacity != bucket.capacity
            }
        except torch.OutOfMemoryError as exc:
            raise DeviceBudgetError(f"out of device memory for a LoRA bank of rank {bucket.rank}: {exc}") from exc
        old = bucket.capacity
        for key, (a, b) in fresh.items():
            if key in bucket.a:
                a[:old].copy_(bucket.a[key])
                b[:old].copy_(bucket.b[key])
            bucket.a[key], bucket.b[key] = a, b
        if capacity != old:
            bucket.targets.extend(frozenset() for _ in range(capacity - old))
            bucket.free_slots.extend(range(old, capacity))
            bucket.capacity = capacity
        self.layout_version += 1

    def _zeros(self, *shape: int) -> torch.Tensor:
        return torch.zeros(shape, dtype=self.dtype, device=self.device)
