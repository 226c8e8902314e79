"""Segmented LoRA: add each adapter's delta to its own rows of a projection's output.

Semantics, for every segment i of the step (rows s_i..e_i, adapter slot i, scale folded in B):
    y[s_i:e_i] += x[s_i:e_i] @ A_i @ B_i        # x: [T, in], A_i: [in, r_i], B_i: [r_i, out]
Base-only rows belong to no segment and are left untouched (exactly zero delta).

Backends, all reading the same `LoraBank` buffers in place (no per-token weight gathers):
- "loop": one shrink/expand matmul pair per segment (a sorted-segment loop);
- "grouped": one `torch.nn.functional.grouped_mm` shrink/expand pair per rank bucket, over all
  the bucket's slots (empty groups for idle slots), so Python work does not grow with adapters;
- "triton": SGMV-style shrink/expand kernels per rank bucket (CUDA only, `triton_lora.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from gpu_engine.adapters import LoraWeights
from gpu_engine.lora_bank import LoraBank
from gpu_engine.segments import BucketRows, Segment, group_buckets

BACKENDS = ("loop", "grouped", "triton")


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

    def __init__(self, bank: LoraBank, segments: Sequence[Segment], backend: str) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown LoRA backend {backend!r}")
        self.bank = bank
        self.backend = backend
        self.segments = list(segments)
        self.buckets: list[tuple[BucketRows, torch.Tensor]] = []
        if backend == "grouped" and self.segments:
            for rows in group_buckets(self.segments, bank.capacities()):
                offs = torch.tensor(rows.group_ends, dtype=torch.int32, device=bank.device)  # [capacity]
                self.buckets.append((rows, offs))
        self._triton = None
        if backend == "triton" and self.segments:
            from gpu_engine.triton_lora import TritonSegments

            self._triton = TritonSegments(self.segments, bank.device)

    @property
    def is_empty(self) -> bool:
        return not self.segments

    def apply(self, y: torch.Tensor, x: torch.Tensor, layer: int, proj: str) -> None:
        """y: [T, out] (updated in place), x: [T, in] — the projection's output and input."""
        if not self.segments:
            return
        key = (layer, proj)
        if self.backend == "loop":
            self._apply_loop(y, x, key)
        elif self.backend == "grouped":
            self._apply_grouped(y, x, key)
        else:
            self._triton.apply(y, x, self.bank, key)

    def _apply_loop(self, y: torch.Tensor, x: torch.Tensor, key: tuple[int, str]) -> None:
        for seg in self.segments:
            bucket = self.bank.buckets[seg.rank]
            if key not in bucket.targets[seg.slot]:
                continue
            shrunk = x[seg.start : seg.end] @ bucket.a[key][seg.slot]  # [n, r]
            y[seg.start : seg.end].addmm_(shrunk, bucket.b[key][seg.slot])

    def _apply_grouped(self, y: torch.Tensor, x: torch.Tensor, key: tuple[int, str]) -> None:
        for rows, offs in self.buckets:
            bucket = self.bank.buckets[rows.rank]
            if key not in bucket.a:
                continue
            shrunk = F.grouped_mm(x[rows.start : rows.end], bucket.a[key], offs=offs)  # [n, r]
            y[rows.start : rows.end] += F.grouped_mm(shrunk, bucket.b[key], offs=offs)


def lora_delta_reference(
    x: torch.Tensor, row_weights: Sequence[LoraWeights | None], out_features: int
) -> torch.Tensor:
    """Slow per-row reference: delta[t] = x[t] @ A_t @ B_t, zero for rows without an adapter."""
    delta = torch.zeros(x.shape[0], out_features, dtype=x.dtype, device=x.device)
    for t, weights in enumerate(row_weights):
        if weights is not None:
            delta[t] = (x[t : t + 1] @ weights.a_t) @ weights.b_t
    return delta
