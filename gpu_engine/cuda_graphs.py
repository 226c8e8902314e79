"""CUDA graphs for static-shape decode steps: captured once per (batch bucket, block-table bucket), replayed.

A decode-only step is padded to a batch bucket (`step_buffers.BATCH_BUCKETS`) and its block
tables to a power-of-two length, so the few shapes that occur are captured once each, in one
shared memory pool, and every later step of that shape costs the host one pack (`pack_decodes`), one
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
from gpu_engine.step_buffers import DecodingSeq, StepShape, batch_bucket, pack_decodes, split, table_bucket
from gpu_engine.step_runner import DeviceOutputs, device_step

if TYPE_CHECKING:
    from gpu_engine.engine import Engine

logger = logging.getLogger(__name__)


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    host: torch.Tensor  # pinned staging buffer of this shape
    device_input: torch.Tensor  # the graph's static input
    outputs: DeviceOutputs  # the graph's outputs: logits [S, V] and greedy ids [S]


def decode_shape_key(num_rows: int, max_position: int, block_size: int, max_table_len: int) -> tuple[int, int]:
    """(padded rows, padded block-table length) of a decode-only step whose furthest row is at
    `max_position`: which graph runs it."""
    return batch_bucket(num_rows), table_bucket(blocks_for(max_position + 1, block_size), max_table_len)


def can_capture(segments: Sequence[Segment], lora_backend: str) -> bool:
    """Whether a decode-only step's LoRA work has static shapes (Triton), or it has none."""
    return lora_backend == "triton" or not segments


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

    def can_run(self, segments: Sequence[Segment]) -> bool:
        """For a decode-only step with these LoRA segments."""
        return self.enabled and can_capture(segments, self.engine.lora_backend)

    def run(self, seqs: Sequence[DecodingSeq], segments: Sequence[Segment]) -> DeviceOutputs:
        """One decode row per sequence, in row order: pad, upload and replay (capturing this shape
        first if new) -> outputs of [bucket] rows; rows past the step's own are padding."""
        kv_cache = self.engine.kv_cache
        max_position = max(seq.num_computed for seq in seqs)
        rows, table = decode_shape_key(len(seqs), max_position, kv_cache.block_size, self.max_table_len)
        flat, shape = pack_decodes(seqs, kv_cache.block_size, kv_cache.null_block, pad_rows_to=rows, pad_table_to=table)
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
                return device_step(engine, engine.step_staging.upload(flat, shape), lora)
            self._graphs[key] = captured
        captured.host.numpy()[:] = flat
        captured.device_input.copy_(captured.host, non_blocking=True)
        captured.graph.replay()
        self.num_replays += 1
        return captured.outputs

    def _capture(self, flat: list[int], shape: StepShape, lora: LoraStep) -> _Captured | None:
        engine = self.engine
        host = torch.tensor(flat, dtype=torch.long).pin_memory()
        device_input = host.to(engine.model.device)
        tensors = split(device_input, shape)
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up: lazy initialisations must not happen under capture
                device_step(engine, tensors, lora)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                outputs = device_step(engine, tensors, lora)
        except Exception:  # e.g. an op that cannot be captured (some quantized kernels)
            logger.exception("CUDA graph capture of a %d-row decode step failed; running eagerly from now on",
                             shape.num_rows)
            self.enabled = False
            return None
        self._pool = graph.pool()
        self.num_captures += 1
        logger.info("captured a CUDA graph: %d rows, %d-block tables", shape.num_rows, shape.decode_table_len)
        return _Captured(graph, host, device_input, outputs)
