"""Triton SGMV kernels for segmented LoRA on CUDA (imported only when the "triton" backend runs).

Semantics, per segment i of one rank bucket (rows s_i..e_i, bank slot p_i):
    shrink:  v[s_i:e_i] = x[s_i:e_i] @ A[p_i].T        # x: [T, in], A: [slots, r, in], v: [T, r]
    expand:  y[s_i:e_i] += v[s_i:e_i] @ B[p_i]         # B: [slots, r, out], y: [T, out]
One program handles BLOCK_M rows of one segment (and BLOCK_N output columns for expand); the
adapter weights are read in place from the LoraBank buffers, never gathered per token.
fp32 inputs use IEEE dot products so results match the PyTorch reference to rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from gpu_engine.lora_bank import LoraBank
from gpu_engine.segments import Segment

BLOCK_M = 16
BLOCK_K = 64
BLOCK_N = 64


@triton.jit
def _shrink_kernel(
    x_ptr, a_ptr, v_ptr, seg_start_ptr, seg_end_ptr, seg_slot_ptr,
    K, R,
    stride_xm, stride_xk, stride_as, stride_ak, stride_ar, stride_vm, stride_vr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    seg = tl.program_id(0)
    start = tl.load(seg_start_ptr + seg)
    end = tl.load(seg_end_ptr + seg)
    slot = tl.load(seg_slot_ptr + seg).to(tl.int64)
    rows = start + tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < end
    rk = tl.arange(0, BLOCK_K)
    rr = tl.arange(0, BLOCK_R)
    acc = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
    a_base = a_ptr + slot * stride_as
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + rk
        x_tile = tl.load(
            x_ptr + rows[:, None] * stride_xm + kk[None, :] * stride_xk,
            mask=row_mask[:, None] & (kk[None, :] < K), other=0.0,
        )  # [BLOCK_M, BLOCK_K]
        a_tile = tl.load(
            a_base + kk[:, None] * stride_ak + rr[None, :] * stride_ar,
            mask=(kk[:, None] < K) & (rr[None, :] < R), other=0.0,
        )  # [BLOCK_K, BLOCK_R]
        acc += tl.dot(x_tile, a_tile, input_precision=DOT_PRECISION)
    tl.store(
        v_ptr + rows[:, None] * stride_vm + rr[None, :] * stride_vr,
        acc.to(v_ptr.dtype.element_ty),
        mask=row_mask[:, None] & (rr[None, :] < R),
    )


@triton.jit
def _expand_kernel(
    v_ptr, b_ptr, y_ptr, seg_start_ptr, seg_end_ptr, seg_slot_ptr,
    N, R,
    stride_vm, stride_vr, stride_bs, stride_br, stride_bn, stride_ym, stride_yn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    seg = tl.program_id(0)
    start = tl.load(seg_start_ptr + seg)
    end = tl.load(seg_end_ptr + seg)
    slot = tl.load(seg_slot_ptr + seg).to(tl.int64)
    rows = start + tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)
    rr = tl.arange(0, BLOCK_R)
    row_mask = rows < end
    col_mask = cols < N
    v_tile = tl.load(
        v_ptr + rows[:, None] * stride_vm + rr[None, :] * stride_vr,
        mask=row_mask[:, None] & (rr[None, :] < R), other=0.0,
    )  # [BLOCK_M, BLOCK_R]
    b_tile = tl.load(
        b_ptr + slot * stride_bs + rr[:, None] * stride_br + cols[None, :] * stride_bn,
        mask=(rr[:, None] < R) & col_mask[None, :], other=0.0,
    )  # [BLOCK_R, BLOCK_N]
    delta = tl.dot(v_tile, b_tile, input_precision=DOT_PRECISION)
    y_ptrs = y_ptr + rows[:, None] * stride_ym + cols[None, :] * stride_yn
    out_mask = row_mask[:, None] & col_mask[None, :]
    y_tile = tl.load(y_ptrs, mask=out_mask, other=0.0)
    tl.store(y_ptrs, (y_tile.to(tl.float32) + delta).to(y_ptr.dtype.element_ty), mask=out_mask)


class TritonSegments:
    """Per rank bucket, the step's segments as device int32 tensors, ready for kernel launches."""

    def __init__(self, segments: Sequence[Segment], device: torch.device) -> None:
        by_rank: dict[int, list[Segment]] = {}
        for seg in segments:
            by_rank.setdefault(seg.rank, []).append(seg)
        self.buckets = []
        for rank, segs in by_rank.items():
            table = torch.tensor([[s.start, s.end, s.slot] for s in segs], dtype=torch.int32).t().contiguous()
            table = table.to(device, non_blocking=True)  # [3, num_segments]
            max_rows = max(s.end - s.start for s in segs)
            self.buckets.append((rank, table, len(segs), max_rows))

    def apply(self, y: torch.Tensor, x: torch.Tensor, bank: LoraBank, key: tuple[int, str]) -> None:
        """y: [T, out] += segmented LoRA delta of x: [T, in] for projection `key`."""
        precision = "ieee" if x.dtype == torch.float32 else "tf32"
        for rank, table, num_segments, max_rows in self.buckets:
            bucket = bank.buckets[rank]
            if key not in bucket.a:
                continue
            a, b = bucket.a[key], bucket.b[key]  # [S, r, in], [S, r, out]
            block_r = max(16, triton.next_power_of_2(rank))
            v = torch.empty(x.shape[0], rank, dtype=x.dtype, device=x.device)  # [T, r]
            m_blocks = triton.cdiv(max_rows, BLOCK_M)
            _shrink_kernel[(num_segments, m_blocks)](
                x, a, v, table[0], table[1], table[2],
                x.shape[1], rank,
                x.stride(0), x.stride(1), a.stride(0), a.stride(2), a.stride(1), v.stride(0), v.stride(1),
                BLOCK_M=BLOCK_M, BLOCK_K=BLOCK_K, BLOCK_R=block_r, DOT_PRECISION=precision,
            )
            _expand_kernel[(num_segments, m_blocks, triton.cdiv(y.shape[1], BLOCK_N))](
                v, b, y, table[0], table[1], table[2],
                y.shape[1], rank,
                v.stride(0), v.stride(1), b.stride(0), b.stride(1), b.stride(2), y.stride(0), y.stride(1),
                BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_R=block_r, DOT_PRECISION=precision,
            )
