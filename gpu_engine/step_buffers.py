"""The index tensors of one step, packed into one host buffer and uploaded with one copy.

Every per-step integer a forward pass needs (token ids, positions, KV write rows, rows to
sample, the decode and prefill block tables and query positions) is written into one int64
host buffer — pinned on CUDA, reused step after step — and reaches the device in ONE
non-blocking copy; the tensors the step uses are views of that one device tensor. Masks are
then built on the device from those views (attention.py), so a step never waits for the host.
The buffers are reused safely: every step ends by reading its sampled tokens, which waits for
the previous upload, and the next upload is queued behind the step's kernels.

`pack_step` is pure Python. With `pad_rows_to` (static-shape decode) the step is padded to a
bucket: extra rows feed token 0 at position 0, write their keys into the cache's null block and
attend to it only; their outputs are never read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import torch

# batch sizes a static decode step is padded to; larger batches round up to a multiple of 128
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def batch_bucket(num_rows: int) -> int:
    for size in BATCH_BUCKETS:
        if num_rows <= size:
            return size
    return -(-num_rows // BATCH_BUCKETS[-1]) * BATCH_BUCKETS[-1]


def table_bucket(num_blocks: int, max_blocks: int) -> int:
    """Block-table length of a static step: the next power of two, at most `max_blocks`."""
    size = 1
    while size < num_blocks:
        size *= 2
    return max(num_blocks, min(size, max_blocks))


class SeqChunk(NamedTuple):
    """One sequence's rows in a step: rows [row_start, row_start+num_rows) at positions from
    start_pos, with its block table (covering at least start_pos + num_rows positions)."""

    row_start: int
    num_rows: int
    start_pos: int
    kv_blocks: Sequence[int]


@dataclass(frozen=True)
class StepShape:
    """Sizes of the packed tensors: rows T, sampled rows S, decodes B with block tables of nbd
    entries, prefills P of n query rows each (padded) with block tables of nbp entries."""

    num_rows: int
    num_samples: int
    num_decodes: int
    decode_table_len: int
    num_prefills: int
    prefill_rows: int
    prefill_table_len: int
    decode_rows_are_all_rows: bool  # every row is a decode, in row order (no gather needed)

    def sizes(self) -> list[int]:
        t, b, p = self.num_rows, self.num_decodes, self.num_prefills * self.prefill_rows
        return [t, t, t, self.num_samples, b, b * self.decode_table_len, b, p, p,
                self.num_prefills * self.prefill_table_len, p]


def pack_step(
    chunks: Sequence[SeqChunk], input_ids: Sequence[int], sample_rows: Sequence[int], block_size: int,
    null_block: int, pad_rows_to: int | None = None, pad_table_to: int | None = None,
) -> tuple[list[int], StepShape]:
    """The step's integers in one list (order of `StepShape.sizes`) and their shape."""
    num_real = len(input_ids)
    num_rows = num_real if pad_rows_to is None else pad_rows_to
    if num_rows < num_real:
        raise ValueError("pad_rows_to is smaller than the step")
    positions: list[int] = []
    kv_rows: list[int] = []
    decodes: list[SeqChunk] = []
    prefills: list[SeqChunk] = []
    decode_rows: list[int] = []
    decode_pos: list[int] = []
    for c in chunks:  # one pass; a decode (the common row) without an inner loop
        start = c.start_pos
        if c.num_rows == 1:
            decodes.append(c)
            decode_rows.append(c.row_start)
            decode_pos.append(start)
            positions.append(start)
            kv_rows.append(c.kv_blocks[start // block_size] * block_size + start % block_size)
            continue
        prefills.append(c)
        for pos in range(start, start + c.num_rows):
            positions.append(pos)
            kv_rows.append(c.kv_blocks[pos // block_size] * block_size + pos % block_size)
    null_row = null_block * block_size
    num_pad = num_rows - num_real
    positions += [0] * num_pad
    kv_rows += [null_row] * num_pad
    samples = list(sample_rows) + [num_real] * (num_pad if pad_rows_to is not None else 0)
    num_tables = -(-(max(decode_pos) + 1) // block_size) if decodes else 0
    if pad_table_to is not None:
        num_tables = max(num_tables, pad_table_to)
    decode_rows += range(num_real, num_rows)
    decode_pos += [0] * num_pad
    decode_tables: list[int] = []
    for c in decodes:
        used = -(-(c.start_pos + 1) // block_size)
        decode_tables += c.kv_blocks[:used]
        decode_tables += [null_block] * (num_tables - used)
    decode_tables += [null_block] * (num_tables * num_pad)
    n = max((c.num_rows for c in prefills), default=0)
    prefill_tables_len = max((-(-(c.start_pos + c.num_rows) // block_size) for c in prefills), default=0)
    src: list[int] = []
    dst: list[int] = []
    q_pos: list[int] = []
    tables: list[int] = []
    for c in prefills:
        pad = n - c.num_rows
        rows = range(c.row_start, c.row_start + c.num_rows)
        src += rows
        src += [c.row_start] * pad  # any real row: its output is dropped
        dst += rows
        dst += [num_rows] * pad  # the scratch row past the step's rows
        q_pos += range(c.start_pos, c.start_pos + c.num_rows)
        q_pos += [0] * pad
        used = -(-(c.start_pos + c.num_rows) // block_size)
        tables += c.kv_blocks[:used]
        tables += [null_block] * (prefill_tables_len - used)
    shape = StepShape(num_rows, len(samples), len(decode_rows), num_tables, len(prefills), n, prefill_tables_len,
                      decode_rows_are_all_rows=not prefills and decode_rows == list(range(num_rows)))
    ids = list(input_ids) + [0] * num_pad
    flat = ids + positions + kv_rows + samples + decode_rows + decode_tables + decode_pos + src + dst + tables + q_pos
    return flat, shape


class DecodingSeq(Protocol):
    """What `pack_decodes` reads of a sequence (SeqState has it)."""

    num_computed: int
    token_ids: list[int]
    kv_blocks: list[int]


def pack_decodes(
    seqs: Sequence[DecodingSeq], block_size: int, null_block: int,
    pad_rows_to: int | None = None, pad_table_to: int | None = None,
) -> tuple[list[int], StepShape]:
    """`pack_step` of a decode-only step, in one tight pass: row i feeds sequence i's last token at
    position `num_computed` and is sampled. Same list and shape as `pack_step` gives for
    `SeqChunk(i, 1, seq.num_computed, seq.kv_blocks)` rows with every row sampled."""
    num_real = len(seqs)
    num_rows = num_real if pad_rows_to is None else pad_rows_to
    if num_rows < num_real:
        raise ValueError("pad_rows_to is smaller than the step")
    num_pad = num_rows - num_real
    num_tables = -(-(max(seq.num_computed for seq in seqs) + 1) // block_size) if seqs else 0
    if pad_table_to is not None:
        num_tables = max(num_tables, pad_table_to)
    null_tails = [[null_block] * (num_tables - used) for used in range(num_tables + 1)]  # by blocks used
    ids: list[int] = []
    positions: list[int] = []
    kv_rows: list[int] = []
    tables: list[int] = []
    for seq in seqs:
        pos = seq.num_computed
        blocks = seq.kv_blocks
        last = pos // block_size
        ids.append(seq.token_ids[pos])
        positions.append(pos)
        kv_rows.append(blocks[last] * block_size + pos - last * block_size)
        tables += blocks[: last + 1]
        tables += null_tails[last + 1]
    if num_pad:
        ids += [0] * num_pad
        positions += [0] * num_pad
        kv_rows += [null_block * block_size] * num_pad
        tables += [null_block] * (num_tables * num_pad)
        samples = list(range(num_real)) + [num_real] * num_pad
    else:
        samples = list(range(num_real))
    shape = StepShape(num_rows, len(samples), num_rows, num_tables, 0, 0, 0, decode_rows_are_all_rows=True)
    return ids + positions + kv_rows + samples + list(range(num_rows)) + tables + positions, shape


@dataclass
class StepTensors:
    """Views of the uploaded buffer (shapes as in StepShape)."""

    shape: StepShape
    input_ids: torch.Tensor  # [T]
    positions: torch.Tensor  # [T]
    kv_rows: torch.Tensor  # [T] = block * block_size + offset
    sample_rows: torch.Tensor  # [S]
    decode_rows: torch.Tensor  # [B]
    decode_tables: torch.Tensor  # [B, nbd]
    decode_pos: torch.Tensor  # [B]
    prefill_src: torch.Tensor  # [P * n] rows of q to gather
    prefill_dst: torch.Tensor  # [P * n] rows of the output to write (T = scratch)
    prefill_tables: torch.Tensor  # [P, nbp]
    prefill_pos: torch.Tensor  # [P, n]


class StagingBuffer:
    """One host int64 buffer (pinned on CUDA) and, off the CPU, one device buffer of the same size,
    both grown on demand and reused step after step: one upload per step into the same device
    memory, so a step of the same shape as the one before reuses its views (no split, no
    allocation). On the CPU the host buffer is the step's tensor."""

    def __init__(self, device: torch.device, capacity: int = 1 << 14) -> None:
        self.device = device
        self._on_cpu = device.type == "cpu"
        self._allocate(capacity)
        self.num_uploads = 0

    def _allocate(self, capacity: int) -> None:
        self._host = torch.empty(capacity, dtype=torch.long, pin_memory=not self._on_cpu)
        self._device = self._host if self._on_cpu else torch.empty(capacity, dtype=torch.long, device=self.device)
        self._last: tuple[StepShape, StepTensors] | None = None  # views of the buffer, by shape

    def upload(self, flat: list[int], shape: StepShape) -> StepTensors:
        size = len(flat)
        if size > self._host.numel():
            self._allocate(2 * size)
        self._host.numpy()[:size] = flat
        if not self._on_cpu:  # queued behind the previous step's kernels, which read the same memory
            self._device[:size].copy_(self._host[:size], non_blocking=True)
        self.num_uploads += 1
        last = self._last
        if last is None or last[0] != shape:
            last = self._last = (shape, split(self._device[:size], shape))
        return last[1]


def split(data: torch.Tensor, shape: StepShape) -> StepTensors:
    """Cut one flat tensor (laid out as `StepShape.sizes`) into the step's views."""
    parts = torch.split(data, shape.sizes())
    return StepTensors(
        shape, parts[0], parts[1], parts[2], parts[3], parts[4],
        parts[5].view(shape.num_decodes, shape.decode_table_len), parts[6], parts[7], parts[8],
        parts[9].view(shape.num_prefills, shape.prefill_table_len), parts[10].view(shape.num_prefills, shape.prefill_rows),
    )
