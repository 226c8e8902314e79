"""Segmented LoRA: add each adapter's delta to its own rows of a projection's output.

Semantics, for every segment i of the step (rows s_i..e_i, adapter slot i, scale folded in B):
    y[s_i:e_i] += x[s_i:e_i] @ A_i.T @ B_i      # x: [T, in], A_i: [r_i, in], B_i: [r_i, out]
Base-only rows belong to no segment and are left untouched (exactly zero delta).

Backends, all reading the same `LoraBank` buffers in place (no per-token weight gathers):
- "loop": one shrink/expand matmul pair per segment (a sorted-segment loop);
- "grouped": one `torch.nn.functional.grouped_mm` shrink/expand pair per rank bucket, so Python
  work does not grow with adapters. It runs over all the bucket's slots (empty groups for idle
  slots) while the step uses at least a third of them; a step using fewer first gathers the
  used slots' weights ([k, r, in] + [k, r, out], k = segments — per adapter, never per token),
  since grouped_mm's cost grows with the group count even for empty groups (a 1024-slot r8
  bucket with 24 used slots: ~1.9 ms full vs ~0.25 ms gathered per projection on this CPU);
- "triton": SGMV-style shrink/expand kernels per rank bucket over fixed-capacity (segment, row
  block) work items (CUDA; `triton_lora.py`, `lora_work_items.py`).
With "loop" and "grouped", a bucket whose row i uses slot first_slot + i (the all-distinct
decode case) runs as one `bmm` over the bank's slot range — a view of the bank, not a gather —
and "grouped" runs a bucket with a single segment as a plain matmul pair. Measured on the
2-core CPU (docs/engine.md): bmm beats grouped_mm by ~15% and the loop by ~25% for 32 distinct
adapters; grouped_mm beats the loop with many multi-row segments; one segment is best plain.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from gpu_engine.adapters import LoraWeights
from gpu_engine.lora_bank import LoraBank
from gpu_engine.segments import BucketRows, Segment, group_buckets

BACKENDS = ("loop", "grouped", "triton")
# "grouped" gathers the used slots when the bucket has more than this many slots per segment
_GATHER_BELOW_FRACTION = 3


def has_grouped_mm() -> bool:
    return hasattr(F, "grouped_mm")


def choose_backend(requested: str, device: torch.device) -> str:
    """Resolve "auto": triton on CUDA, grouped_mm where torch has it, else the segment loop."""
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "triton"
    return "grouped" if has_grouped_mm() else "loop"


class LoraStep:
    """The LoRA layout of one engine step: which rows use which bank slot."""

    def __init__(
        self,
        bank: LoraBank,
        segments: Sequence[Segment],
        backend: str,
        *,
        num_rows: int | None = None,
        static_shape: bool = False,
    ) -> None:
        """`num_rows`: the step's row count (padded, under CUDA graphs; default: the segments' end,
        rounded up to a power of two). `static_shape` (Triton): launch every rank bucket of the bank
        whether or not the step uses it, so a captured graph replays for any segment layout."""
        if backend not in BACKENDS:
            raise ValueError(f"unknown LoRA backend {backend!r}")
        self.bank = bank
        self.backend = backend
        self.segments = list(segments)
        # per rank bucket: its rows, its segments, grouped_mm offsets, and the slots to gather (or None: all)
        self.buckets: list[tuple[BucketRows, list[Segment], torch.Tensor | None, torch.Tensor | None]] = []
        self._triton = None
        if backend == "triton" and (self.segments or static_shape):
            from gpu_engine.triton_lora import TritonLoraStep

            rows = num_rows if num_rows is not None else _round_up_rows(max(s.end for s in self.segments))
            self._triton = TritonLoraStep(bank, self.segments, rows, static_shape)
            return
        if not self.segments or backend == "triton":
            return
        for rows in group_buckets(self.segments, bank.capacities()):
            segs = [s for s in self.segments if s.rank == rows.rank]
            offs = used = None
            if backend == "grouped" and rows.first_slot is None and len(segs) > 1:
                if len(rows.group_ends) > _GATHER_BELOW_FRACTION * len(segs):
                    used = torch.tensor([seg.slot for seg in segs], dtype=torch.int64, device=bank.device)  # [k]
                    ends = [seg.end - rows.start for seg in segs]
                else:
                    ends = list(rows.group_ends)
                offs = torch.tensor(ends, dtype=torch.int32, device=bank.device)  # [k] or [capacity]
            self.buckets.append((rows, segs, offs, used))

    def apply(self, y: torch.Tensor, x: torch.Tensor, layer: int, proj: str) -> None:
        """y: [T, out] (updated in place), x: [T, in] — the projection's output and input."""
        key = (layer, proj)
        if self._triton is not None:
            self._triton.apply(y, x, key)
            return
        if not self.segments:
            return
        for rows, segs, offs, used in self.buckets:
            bucket = self.bank.buckets[rows.rank]
            if key not in bucket.a:
                continue
            a, b = bucket.a[key], bucket.b[key]  # [S, r, in], [S, r, out]
            x_rows, y_rows = x[rows.start : rows.end], y[rows.start : rows.end]  # [n, in], [n, out]
            if rows.first_slot is not None:  # row i uses slot first_slot + i: the slot range is a batch
                slots = slice(rows.first_slot, rows.first_slot + x_rows.shape[0])
                shrunk = torch.bmm(x_rows.unsqueeze(1), a[slots].transpose(1, 2))  # [n, 1, r]
                y_rows += torch.bmm(shrunk, b[slots]).squeeze(1)
            elif offs is not None:
                if used is not None:  # only the step's slots: [k, r, in], [k, r, out]
                    a, b = a.index_select(0, used), b.index_select(0, used)
                shrunk = F.grouped_mm(x_rows, a.transpose(1, 2), offs=offs)  # [n, r]
                y_rows += F.grouped_mm(shrunk, b, offs=offs)
            else:
                for seg in segs:
                    if key in bucket.targets[seg.slot]:
                        shrunk = F.linear(x[seg.start : seg.end], a[seg.slot])  # [m, r]
                        y[seg.start : seg.end].addmm_(shrunk, b[seg.slot])


def _round_up_rows(num_rows: int) -> int:
    """A power of two >= 16: steps of similar size share the Triton backend's buffers and launch constants."""
    return max(16, 1 << (num_rows - 1).bit_length())


def lora_delta_reference(
    x: torch.Tensor, row_weights: Sequence[LoraWeights | None], out_features: int
) -> torch.Tensor:
    """Slow per-row reference: delta[t] = x[t] @ A_t @ B_t, zero for rows without an adapter."""
    delta = torch.zeros(x.shape[0], out_features, dtype=x.dtype, device=x.device)
    for t, weights in enumerate(row_weights):
        if weights is not None:
            delta[t] = (x[t : t + 1] @ weights.a.t()) @ weights.b_t
    return delta
