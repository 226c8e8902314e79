"""run_step: turn the scheduler's chunks into tensors, run the forward pass, sample.

The step's device work: index tensors, the forward pass, sampling. The one other device write of
a step happens before it: admission (`Scheduler.schedule` -> `AdapterCache.admit`) copies a
host-resident adapter's weights into its LoRA bank slot (`LoraBank.add`, asynchronous on CUDA).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from gpu_engine.attention import AttentionPlan, SeqChunk
from gpu_engine.lora_ops import LoraStep
from gpu_engine.sampler import sample
from gpu_engine.scheduler import ScheduledChunk
from gpu_engine.segments import find_segments, segment_sort_key
from gpu_engine.seq_state import SeqState
from gpu_engine.transformer import forward

if TYPE_CHECKING:
    from gpu_engine.engine import Engine


def run_step(
    engine: Engine, chunks: Sequence[ScheduledChunk], generators: Sequence[torch.Generator | None]
) -> list[tuple[SeqState, int]]:
    """Feed every chunk through the model; returns (sequence, new token) for completed chunks."""
    order = sorted(range(len(chunks)), key=lambda i: segment_sort_key(chunks[i].seq.bank_slot))
    input_ids: list[int] = []
    positions: list[int] = []
    seq_chunks: list[SeqChunk] = []
    sample_rows: list[int] = []
    sampled: list[int] = []  # indexes into chunks, in sample_rows order
    for i in order:
        seq, num_tokens = chunks[i].seq, chunks[i].num_tokens
        start = seq.num_computed
        seq_chunks.append(SeqChunk(len(input_ids), num_tokens, seq.kv_slot, start))
        input_ids += seq.token_ids[start : start + num_tokens]
        positions += range(start, start + num_tokens)
        if chunks[i].completes:
            sample_rows.append(len(input_ids) - 1)
            sampled.append(i)
    device = engine.model.device
    segments = find_segments([chunks[i].seq.bank_slot for i in order], [chunks[i].num_tokens for i in order])
    with torch.inference_mode():
        plan = AttentionPlan(seq_chunks, engine.spec.sliding_windows, engine.kv_cache, device)
        lora = LoraStep(engine.bank, segments, engine.lora_backend)
        logits = forward(
            engine.model,
            engine.kv_cache,
            torch.tensor(input_ids, dtype=torch.long, device=device),
            torch.tensor(positions, dtype=torch.long, device=device),
            plan,
            lora,
            torch.tensor(sample_rows, dtype=torch.long, device=device),
        )  # [B, V]
        tokens = sample(logits, [chunks[i].seq.request.sampling for i in sampled], [generators[i] for i in sampled])
    for chunk in chunks:
        chunk.seq.num_computed += chunk.num_tokens
    return [(chunks[i].seq, token) for i, token in zip(sampled, tokens)]
