"""Triton SGMV kernels for segmented LoRA on CUDA (imported only when the "triton" backend runs).

Semantics, per work item i of one rank bucket (rows s_i..e_i of one segment, bank slot p_i):
    shrink:  v[s_i:e_i] = x[s_i:e_i] @ A[p_i].T        # x: [T, in], A: [slots, r, in], v: [T, r]
    expand:  y[s_i:e_i] += v[s_i:e_i] @ B[p_i]         # B: [slots, r, out], y: [T, out]
Programs run over a fixed-capacity work-item table (lora_work_items.py) and exit at once past the
bucket's count, so the grid depends only on the row count (CUDA-graph friendly). The shrink
splits its reduction over in_features into SPLIT_K fp32 partials [SPLIT_K, T, r] (a decode step
would otherwise get one program per adapter); the expand sums them in a fixed order, so results
are deterministic (no atomics), and multiplies by B in fp32 (tf32 for half-precision banks).
The adapter weights are read in place from the LoraBank buffers.
Tiles are upcast to fp32 before every tl.dot: fp32 banks use IEEE products (the PyTorch reference
to rounding), bf16/fp16 banks tf32 ones, which hold bf16/fp16 values exactly (10 mantissa bits),
so products are exact and sums fp32. (It also keeps one code path for the GPU and Triton's CPU
interpreter, whose bf16 tl.dot returns unconverted bits.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from gpu_engine.lora_bank import LoraBank
from gpu_engine.lora_work_items import (
    BLOCK_M, EXPAND_BLOCK_N, ITEM_FIELDS, SHRINK_BLOCK_K, build_work_items, count_work_items, k_per_split,
    shrink_split_k, work_item_capacity,
)
from gpu_engine.pinned_staging import PinnedStaging
from gpu_engine.segments import Segment

_CPU_SMS = 8  # the interpreter's stand-in for an SM count (only the split-K choice reads it)


@triton.jit
def _shrink_kernel(
    x_ptr, a_ptr, part_ptr, items_ptr, count_ptr,
    K, R, K_PER_SPLIT,
    stride_xm, stride_xk, stride_as, stride_ak, stride_ar, stride_ps, stride_pm, stride_pr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    item = tl.program_id(0)
    if item >= tl.load(count_ptr):
        return
    row_start = tl.load(items_ptr + item * 3)
    row_end = tl.load(items_ptr + item * 3 + 1)
    slot = tl.load(items_ptr + item * 3 + 2).to(tl.int64)
    split = tl.program_id(1)
    rows = row_start + tl.arange(0, BLOCK_M)
    row_mask = rows < row_end
    rk = tl.arange(0, BLOCK_K)
    rr = tl.arange(0, BLOCK_R)
    k_begin = split * K_PER_SPLIT
    k_stop = tl.minimum(K, k_begin + K_PER_SPLIT)
    acc = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
    a_base = a_ptr + slot * stride_as
    for k0 in range(k_begin, k_stop, BLOCK_K):
        kk = k0 + rk
        x_tile = tl.load(
            x_ptr + rows[:, None] * stride_xm + kk[None, :] * stride_xk,
            mask=row_mask[:, None] & (kk[None, :] < k_stop), other=0.0,
        )  # [BLOCK_M, BLOCK_K]
        a_tile = tl.load(
            a_base + kk[:, None] * stride_ak + rr[None, :] * stride_ar,
            mask=(kk[:, None] < k_stop) & (rr[None, :] < R), other=0.0,
        )  # [BLOCK_K, BLOCK_R]
        acc += tl.dot(x_tile.to(tl.float32), a_tile.to(tl.float32), input_precision=DOT_PRECISION)
    tl.store(
        part_ptr + split * stride_ps + rows[:, None] * stride_pm + rr[None, :] * stride_pr,
        acc, mask=row_mask[:, None] & (rr[None, :] < R),
    )


@triton.jit
def _expand_kernel(
    part_ptr, b_ptr, y_ptr, items_ptr, count_ptr,
    N, R,
    stride_ps, stride_pm, stride_pr, stride_bs, stride_br, stride_bn, stride_ym, stride_yn,
    SPLIT_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    item = tl.program_id(0)
    if item >= tl.load(count_ptr):
        return
    row_start = tl.load(items_ptr + item * 3)
    row_end = tl.load(items_ptr + item * 3 + 1)
    slot = tl.load(items_ptr + item * 3 + 2).to(tl.int64)
    rows = row_start + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    rr = tl.arange(0, BLOCK_R)
    row_mask = rows < row_end
    col_mask = cols < N
    v_mask = row_mask[:, None] & (rr[None, :] < R)
    v_ptrs = part_ptr + rows[:, None] * stride_pm + rr[None, :] * stride_pr
    v = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
    for split in tl.static_range(SPLIT_K):  # fixed order: deterministic
        v += tl.load(v_ptrs + split * stride_ps, mask=v_mask, other=0.0)
    b_tile = tl.load(
        b_ptr + slot * stride_bs + rr[:, None] * stride_br + cols[None, :] * stride_bn,
        mask=(rr[:, None] < R) & col_mask[None, :], other=0.0,
    )  # [BLOCK_R, BLOCK_N]
    # v stays fp32 (rounded to tf32 on tensor cores for half banks: finer than bf16/fp16)
    delta = tl.dot(v, b_tile.to(tl.float32), input_precision=DOT_PRECISION)
    y_ptrs = y_ptr + rows[:, None] * stride_ym + cols[None, :] * stride_yn
    out_mask = row_mask[:, None] & col_mask[None, :]
    y_tile = tl.load(y_ptrs, mask=out_mask, other=0.0)
    tl.store(y_ptrs, (y_tile.to(tl.float32) + delta).to(y_ptr.dtype.element_ty), mask=out_mask)


class TritonBuffers:
    """What the kernels reuse across steps, kept on the bank (`bank.kernel_buffers`): per row
    capacity, the work-item table's staging and device buffer (stable addresses for CUDA graphs),
    the split-K partials, and the launch configuration per (rank, projection, rows). A new
    partials buffer bumps `bank.layout_version`, as a reallocated bank buffer does."""

    def __init__(self, bank: LoraBank) -> None:
        self.bank = bank
        device = self.device = bank.device
        self.num_sms = (
            torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else _CPU_SMS
        )
        self.tables: dict[int, PinnedStaging] = {}
        self.partials: dict[int, torch.Tensor] = {}  # rows -> [max SPLIT_K, rows, max rank] fp32
        self.launches: dict[tuple, tuple] = {}

    def partials_for(self, num_rows: int, split_k: int, rank: int) -> torch.Tensor:
        part = self.partials.get(num_rows)
        if part is None or part.shape[0] < split_k or part.shape[2] < rank:
            old = (0, 0, 0) if part is None else part.shape
            part = torch.empty(max(split_k, old[0]), num_rows, max(rank, old[2]), dtype=torch.float32,
                               device=self.device)
            self.partials[num_rows] = part
            self.bank.layout_version += 1  # a new address the kernels read (captured graphs are stale)
        return part


class TritonLoraStep:
    """One step's work-item table on the device, and the kernel launches per projection.

    `num_rows` is the step's row count (its padded size under CUDA graphs). `static_shape` sizes the
    table for any layout of `num_rows` rows and launches every rank bucket of the bank, empty or
    not, so the launches do not depend on the step's data; otherwise the table holds the step's
    largest bucket (rounded up to a power of two) and only buckets with work are launched.
    """

    def __init__(self, bank: LoraBank, segments: Sequence[Segment], num_rows: int, static_shape: bool) -> None:
        if bank.kernel_buffers is None:
            bank.kernel_buffers = TritonBuffers(bank)
        self.bank = bank
        self.buffers: TritonBuffers = bank.kernel_buffers
        self.num_rows = num_rows
        self.ranks = tuple(sorted(bank.buckets))
        if static_shape:
            self.capacity = work_item_capacity(num_rows)
        else:
            self.capacity = 1 << max(0, count_work_items(segments) - 1).bit_length()
        table = build_work_items(segments, self.ranks, self.capacity)
        staging = self.buffers.tables.get(num_rows)
        if staging is None:
            staging = self.buffers.tables[num_rows] = PinnedStaging(bank.device, torch.int32)
        size = len(table.values)
        staging.host(size).copy_(torch.tensor(table.values, dtype=torch.int32))
        device_table = staging.to_device(size)  # one non-blocking copy of every bucket's items and counts
        self.launch_buckets = [
            (rank, device_table[i * self.capacity * ITEM_FIELDS :], device_table[table.num_item_values + i :])
            for i, rank in enumerate(self.ranks)
            if static_shape or table.counts[i] > 0
        ]

    def apply(self, y: torch.Tensor, x: torch.Tensor, key: tuple[int, str]) -> None:
        """y: [T, out] += segmented LoRA delta of x: [T, in] for projection `key`."""
        for rank, items, count in self.launch_buckets:
            bucket = self.bank.buckets[rank]
            if key not in bucket.a:
                continue
            a, b = bucket.a[key], bucket.b[key]  # [S, r, in], [S, r, out]
            launch = self._launch(rank, key[1], a, b, x, y)
            shrink_grid, expand_grid, split_k, k_split, block_r, precision = launch
            part = self.buffers.partials_for(self.num_rows, split_k, rank)
            _shrink_kernel[shrink_grid](
                x, a, part, items, count,
                x.shape[1], rank, k_split,
                x.stride(0), x.stride(1), a.stride(0), a.stride(2), a.stride(1),
                part.stride(0), part.stride(1), part.stride(2),
                BLOCK_M=BLOCK_M, BLOCK_K=SHRINK_BLOCK_K, BLOCK_R=block_r, DOT_PRECISION=precision,
            )
            _expand_kernel[expand_grid](
                part, b, y, items, count,
                y.shape[1], rank,
                part.stride(0), part.stride(1), part.stride(2), b.stride(0), b.stride(1), b.stride(2),
                y.stride(0), y.stride(1),
                SPLIT_K=split_k, BLOCK_M=BLOCK_M, BLOCK_N=EXPAND_BLOCK_N, BLOCK_R=block_r, DOT_PRECISION=precision,
            )

    def _launch(self, rank: int, proj: str, a: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor):
        """Grids and constants for one (rank, projection, rows, capacity): computed once, then looked up."""
        cache_key = (rank, proj, self.num_rows, self.capacity, x.dtype)
        launch = self.buffers.launches.get(cache_key)
        if launch is None:
            in_features, out_features = a.shape[2], b.shape[2]
            split_k = shrink_split_k(self.capacity, in_features, self.buffers.num_sms)
            launch = (
                (self.capacity, split_k),
                (self.capacity, triton.cdiv(out_features, EXPAND_BLOCK_N)),
                split_k,
                k_per_split(in_features, split_k),
                max(16, triton.next_power_of_2(rank)),
                "ieee" if x.dtype == torch.float32 else "tf32",
            )
            self.buffers.launches[cache_key] = launch
        return launch
