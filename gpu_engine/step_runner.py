"""run_step: turn the scheduler's chunks into tensors, run the device step, pick the tokens.

The step's host work is one pass that groups its chunks by adapter (`order_by_adapter`), one
pass that packs every index into one list (`pack_decodes` for a decode-only step, the common
one; `pack_step` otherwise), one upload of that list (`StagingBuffer`), then the device step
(`device_step`: masks, the forward pass and every row's greedy token) and, on the host, only
the rows that sample at a temperature. A decode-only step with CUDA graphs on is padded to a
batch bucket and replayed from its captured graph (`cuda_graphs.py`). The one other device
write of a step happens before it: admission (`Scheduler.schedule` -> `AdapterCache.admit`)
copies a host-resident adapter's weights into its LoRA bank slot (asynchronous on CUDA).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import torch

from gpu_engine.attention import AttentionPlan
from gpu_engine.lora_ops import LoraStep
from gpu_engine.sampler import sample
from gpu_engine.scheduler import ScheduledChunk
from gpu_engine.segments import BankSlot, Segment, segment_sort_key
from gpu_engine.seq_state import SeqState
from gpu_engine.step_buffers import SeqChunk, StepTensors, pack_decodes, pack_step
from gpu_engine.transformer import forward

if TYPE_CHECKING:
    from gpu_engine.engine import Engine


class DeviceOutputs(NamedTuple):
    """What a device step leaves for the host, one row per sampled sequence (padded steps: more)."""

    logits: torch.Tensor  # [S, V] fp32
    greedy_ids: torch.Tensor  # [S] int64: argmax of each row


def order_by_adapter(chunks: Sequence[ScheduledChunk]) -> tuple[Sequence[ScheduledChunk], list[Segment], bool]:
    """The chunks in row order (grouped by bank slot in `segment_sort_key` order, stable within a
    slot), the step's LoRA segments, and whether every chunk is one row that completes its sequence
    (a decode-only step). One pass; a step of one adapter (or none) keeps its order."""
    groups: dict[BankSlot | None, list[ScheduledChunk]] = {}
    decode_only = True
    for chunk in chunks:
        seq, num_tokens = chunk
        if decode_only and (num_tokens != 1 or seq.num_computed + 1 != len(seq.token_ids)):
            decode_only = False
        group = groups.get(seq.bank_slot)
        if group is None:
            groups[seq.bank_slot] = [chunk]
        else:
            group.append(chunk)
    keys = sorted(groups, key=segment_sort_key)
    ordered = chunks if len(keys) == 1 else [chunk for key in keys for chunk in groups[key]]
    segments: list[Segment] = []
    row = 0
    for key in keys:
        group = groups[key]
        num_rows = len(group) if decode_only else sum(chunk.num_tokens for chunk in group)
        if key is not None and num_rows:
            segments.append(Segment(key[0], key[1], row, row + num_rows))
        row += num_rows
    return ordered, segments, decode_only


def run_step(engine: Engine, chunks: Sequence[ScheduledChunk]) -> list[tuple[SeqState, int]]:
    """Feed every chunk through the model; returns (sequence, new token) for completed chunks."""
    ordered, segments, decode_only = order_by_adapter(chunks)
    kv_cache, graphs = engine.kv_cache, engine.decode_graphs
    with torch.inference_mode():
        if decode_only:
            sampled = [seq for seq, _ in ordered]
            if graphs is not None and graphs.can_run(segments):
                outputs = graphs.run(sampled, segments)
            else:
                flat, shape = pack_decodes(sampled, kv_cache.block_size, kv_cache.null_block)
                outputs = device_step(engine, engine.step_staging.upload(flat, shape),
                                      LoraStep(engine.bank, segments, engine.lora_backend))
        else:
            sampled, flat, shape = _pack_mixed(ordered, kv_cache.block_size, kv_cache.null_block)
            outputs = device_step(engine, engine.step_staging.upload(flat, shape),
                                  LoraStep(engine.bank, segments, engine.lora_backend))
        tokens = sample(outputs.logits, outputs.greedy_ids, sampled)
    if decode_only:
        for seq in sampled:
            seq.num_computed += 1
    else:
        for seq, num_tokens in chunks:
            seq.num_computed += num_tokens
    return list(zip(sampled, tokens))


def _pack_mixed(ordered: Sequence[ScheduledChunk], block_size: int, null_block: int):
    """A step with prefill chunks: (sequences sampled, in row order), then `pack_step`'s (flat, shape)."""
    input_ids: list[int] = []
    seq_chunks: list[SeqChunk] = []
    sample_rows: list[int] = []
    sampled: list[SeqState] = []
    for seq, num_tokens in ordered:
        start, end = seq.num_computed, seq.num_computed + num_tokens
        seq_chunks.append(SeqChunk(len(input_ids), num_tokens, start, seq.kv_blocks))
        input_ids += seq.token_ids[start:end]
        if end == len(seq.token_ids):  # the chunk completes the sequence: its next token is sampled
            sample_rows.append(len(input_ids) - 1)
            sampled.append(seq)
    return (sampled, *pack_step(seq_chunks, input_ids, sample_rows, block_size, null_block))


def device_step(engine: Engine, tensors: StepTensors, lora: LoraStep) -> DeviceOutputs:
    """All the device work of one step (what a CUDA graph captures): the forward pass and each
    sampled row's greedy token, so the host reads back S token ids, not S x V logits."""
    logits = forward_step(engine, tensors, lora)
    return DeviceOutputs(logits, logits.argmax(dim=-1))


def forward_step(engine: Engine, tensors: StepTensors, lora: LoraStep) -> torch.Tensor:
    """The forward pass of one step from its uploaded index tensors -> logits [S, V] fp32."""
    kv_cache, model = engine.kv_cache, engine.model
    plan = AttentionPlan(tensors, engine.spec.sliding_windows, kv_cache.block_size, model.dtype)
    return forward(model, kv_cache, tensors.input_ids, tensors.positions, plan, lora, tensors.sample_rows)
