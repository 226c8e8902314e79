"""run_step: turn the scheduler's chunks into tensors, run the forward pass, sample.

The step's host work is one pass over its chunks (`pack_step`), one upload of every index
tensor (`StagingBuffer`), then the device work: masks, the forward pass, sampling. A decode-only
step with CUDA graphs on is padded to a batch bucket and replayed from its captured graph
(`cuda_graphs.py`). The one other device write of a step happens before it: admission
(`Scheduler.schedule` -> `AdapterCache.admit`) copies a host-resident adapter's weights into its
LoRA bank slot (`LoraBank.add`, asynchronous on CUDA).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from gpu_engine.attention import AttentionPlan
from gpu_engine.lora_ops import LoraStep
from gpu_engine.sampler import sample
from gpu_engine.scheduler import ScheduledChunk
from gpu_engine.segments import find_segments, segment_sort_key
from gpu_engine.seq_state import SeqState
from gpu_engine.step_buffers import SeqChunk, StepTensors, pack_step
from gpu_engine.transformer import forward

if TYPE_CHECKING:
    from gpu_engine.engine import Engine


def run_step(
    engine: Engine, chunks: Sequence[ScheduledChunk], generators: Sequence[torch.Generator | None]
) -> list[tuple[SeqState, int]]:
    """Feed every chunk through the model; returns (sequence, new token) for completed chunks."""
    order = sorted(range(len(chunks)), key=lambda i: segment_sort_key(chunks[i].seq.bank_slot))
    input_ids: list[int] = []
    seq_chunks: list[SeqChunk] = []
    sample_rows: list[int] = []
    sampled: list[int] = []  # indexes into chunks, in sample_rows order
    for i in order:
        seq, num_tokens = chunks[i]
        start, end = seq.num_computed, seq.num_computed + num_tokens
        seq_chunks.append(SeqChunk(len(input_ids), num_tokens, start, seq.kv_blocks))
        input_ids += seq.token_ids[start:end]
        if end == len(seq.token_ids):  # the chunk completes the sequence: its next token is sampled
            sample_rows.append(len(input_ids) - 1)
            sampled.append(i)
    segments = find_segments([chunks[i].seq.bank_slot for i in order], [chunks[i].num_tokens for i in order])
    kv_cache, graphs = engine.kv_cache, engine.decode_graphs
    with torch.inference_mode():
        if graphs is not None and graphs.can_run(len(input_ids), seq_chunks, segments):
            logits = graphs.run(seq_chunks, input_ids, sample_rows, segments)
        else:
            lora = LoraStep(engine.bank, segments, engine.lora_backend)
            flat, shape = pack_step(seq_chunks, input_ids, sample_rows, kv_cache.block_size, kv_cache.null_block)
            logits = forward_step(engine, engine.step_staging.upload(flat, shape), lora)
        tokens = sample(logits[: len(sampled)], [chunks[i].seq.request.sampling for i in sampled],
                        [generators[i] for i in sampled])
    for chunk in chunks:
        chunk.seq.num_computed += chunk.num_tokens
    return [(chunks[i].seq, token) for i, token in zip(sampled, tokens)]


def forward_step(engine: Engine, tensors: StepTensors, lora: LoraStep) -> torch.Tensor:
    """The device work of one step from its uploaded index tensors -> logits [S, V] fp32."""
    kv_cache, model = engine.kv_cache, engine.model
    plan = AttentionPlan(tensors, engine.spec.sliding_windows, kv_cache.block_size, model.dtype)
    return forward(model, kv_cache, tensors.input_ids, tensors.positions, plan, lora, tensors.sample_rows)

