"""CUDA graphs for static-shape decode steps: captured once per (batch bucket, block-table bucket), replayed.

A decode-only step is padded to a batch bucket (`step_buffers.BATCH_BUCKETS`) and its block
tables to a power-of-two length, so the few shapes that occur are captured once each, in one
shared memory pool, and every later step of that shape costs the host one pack, one
non-blocking copy of the packed indices into the graph's static input and one replay: no
per-kernel dispatch. The graph reads everything it needs from that static input (masks are
built inside it), so nothing in it depends on host values of the step.

What is captured: decode-only steps. Their LoRA work runs inside the graph with the Triton
backend: `LoraStep(..., num_rows=bucket, static_shape=True)` launches every rank bucket of the
bank over a fixed-capacity work-item table whose device copy stays at one address, and each step
writes its own items there before the replay. The graph also holds the bank's buffer addresses,
so its key includes the bank's layout (rank buckets, their capacities and targeted projections):
a bank that grew is captured anew. With another LoRA backend only base-only steps are captured.
A failed capture turns graphs off for the engine (logged) and steps run eagerly.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from gpu_engine.block_table import blocks_for
from gpu_engine.lora_bank import LoraBank
from gpu_engine.lora_ops import LoraStep
from gpu_engine.segments import Segment
from gpu_engine.step_buffers import SeqChunk, StepShape, batch_bucket, pack_step, split, table_bucket
from gpu_engine.step_runner import forward_step

if TYPE_CHECKING:
    from gpu_engine.engine import Engine

logger = logging.getLogger(__name__)


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    host: torch.Tensor  # pinned staging buffer of this shape
    device_input: torch.Tensor  # the graph's static input
    logits: torch.Tensor  # the graph's output [S, V]


def decode_shape_key(num_rows: int, chunks: Sequence[SeqChunk], block_size: int, max_table_len: int) -> tuple[int, int]:
    """(padded rows, padded block-table length) of a decode-only step: which graph runs it."""
    need = max(blocks_for(c.start_pos + 1, block_size) for c in chunks)
    return batch_bucket(num_rows), table_bucket(need, max_table_len)


def can_capture(num_rows: int, chunks: Sequence[SeqChunk], segments: Sequence[Segment], lora_backend: str) -> bool:
    """A decode-only step (one row per sequence) whose LoRA work has static shapes."""
    return num_rows == len(chunks) and (lora_backend == "triton" or not segments)


def bank_layout(bank: LoraBank) -> tuple[int, tuple[int, ...]]:
    """What a captured graph's LoRA launches depend on: the addresses of the bank's buffers (its
    `layout_version`, bumped on every allocation or free, trims and split-K scratch included) and
    its rank buckets."""
    return bank.layout_version, tuple(sorted(bank.buckets))


class DecodeGraphs:
    def __init__(self, engine: Engine, max_table_len: int) -> None:
        self.engine = engine
        self.max_table_len = max_table_len
        self.enabled = True
        self.num_captures = 0
        self.num_replays = 0
        self._graphs: dict[tuple[int, int], _Captured] = {}
        self._pool = None

    def can_run(self, num_rows: int, chunks: Sequence[SeqChunk], segments: Sequence[Segment]) -> bool:
        return self.enabled and can_capture(num_rows, chunks, segments, self.engine.lora_backend)

    def run(
        self, chunks: Sequence[SeqChunk], input_ids: list[int], sample_rows: list[int], segments: Sequence[Segment]
    ) -> torch.Tensor:
        """Pad, upload and replay (capturing this shape first if new) -> logits [bucket, V]; rows past
        the step's own are padding."""
        kv_cache = self.engine.kv_cache
        rows, table = decode_shape_key(len(input_ids), chunks, kv_cache.block_size, self.max_table_len)
        flat, shape = pack_step(chunks, input_ids, sample_rows, kv_cache.block_size, kv_cache.null_block,
                                pad_rows_to=rows, pad_table_to=table)
        engine = self.engine
        if engine.lora_backend == "triton":  # writes this step's work items where the graph reads them
            lora = LoraStep(engine.bank, segments, "triton", num_rows=rows, static_shape=True)
        else:
            lora = LoraStep(engine.bank, [], engine.lora_backend)
        key = (rows, table, bank_layout(engine.bank))
        captured = self._graphs.get(key)
        if captured is None:
            captured = self._capture(flat, shape, lora)
            if captured is None:
                return forward_step(engine, engine.step_staging.upload(flat, shape), lora)
            self._graphs[key] = captured
        captured.host.numpy()[:] = flat
        captured.device_input.copy_(captured.host, non_blocking=True)
        captured.graph.replay()
        self.num_replays += 1
        return captured.logits

    def _capture(self, flat: list[int], shape: StepShape, lora: LoraStep) -> _Captured | None:
        engine = self.engine
        host = torch.tensor(flat, dtype=torch.long).pin_memory()
        device_input = host.to(engine.model.device)
        tensors = split(device_input, shape)
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up: lazy initialisations must not happen under capture
                forward_step(engine, tensors, lora)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                logits = forward_step(engine, tensors, lora)
        except Exception:  # e.g. an op that cannot be captured (some quantized kernels)
            logger.exception("CUDA graph capture of a %d-row decode step failed; running eagerly from now on",
                             shape.num_rows)
            self.enabled = False
            return None
        self._pool = graph.pool()
        self.num_captures += 1
        logger.info("captured a CUDA graph: %d rows, %d-block tables", shape.num_rows, shape.decode_table_len)
        return _Captured(graph, host, device_input, logits)
