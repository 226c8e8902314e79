"""Token sampling: greedy, temperature, top-k, top-p, with one torch.Generator per request.

Each sampled row draws exactly one uniform number from its own generator per token, so a
seeded request produces the same tokens whatever else shares its batch.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from gpu_engine.seq_state import SeqState
from gpu_engine.types import SamplingParams

_SEED_SOURCE = random.SystemRandom()


def make_generator(params: SamplingParams, device: torch.device) -> torch.Generator | None:
    """None for greedy requests; unseeded sampled requests get a random seed."""
    if params.temperature == 0:
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed(params.seed if params.seed is not None else _SEED_SOURCE.getrandbits(63))
    return generator


def _filtered_sorted_probs(logits: torch.Tensor, params: Sequence[SamplingParams]):
    """logits: [B, V] (already divided by temperature) -> (probs [B, V] sorted descending, their ids)."""
    vocab = logits.shape[1]
    sorted_logits, sorted_ids = logits.sort(dim=-1, descending=True)  # [B, V]
    ranks = torch.arange(vocab, device=logits.device)[None]  # [1, V]
    top_k = torch.tensor([p.top_k or vocab for p in params], device=logits.device)[:, None]  # [B, 1]
    sorted_logits = sorted_logits.masked_fill(ranks >= top_k, float("-inf"))
    probs = sorted_logits.softmax(dim=-1)
    top_p = torch.tensor([p.top_p for p in params], dtype=probs.dtype, device=logits.device)[:, None]
    mass_before = probs.cumsum(dim=-1) - probs  # [B, V]
    probs = probs.masked_fill((mass_before > top_p) & (ranks > 0), 0.0)
    return probs, sorted_ids


def sample(logits: torch.Tensor, greedy_ids: torch.Tensor, seqs: Sequence[SeqState]) -> list[int]:
    """One token id per sequence of `seqs`, row i of the device step's outputs being sequence i.

    logits: [S', V] fp32, greedy_ids: [S'] their argmax (S' >= len(seqs): a padded step's extra
    rows are ignored). A greedy sequence (no generator) takes its argmax; the others draw from
    their own generator, so the host touches logits only for those rows.
    """
    tokens = greedy_ids[: len(seqs)].tolist()
    rows = [i for i, seq in enumerate(seqs) if seq.generator is not None]
    if not rows:
        return tokens
    index = torch.tensor(rows, device=logits.device)
    row_params = [seqs[i].request.sampling for i in rows]
    temps = torch.tensor([p.temperature for p in row_params], device=logits.device)[:, None]
    scaled = logits[index] / temps  # [R, V]
    if any(p.top_k or p.top_p < 1 for p in row_params):
        probs, ids = _filtered_sorted_probs(scaled, row_params)
    else:
        probs, ids = scaled.softmax(dim=-1), None
    cdf = probs.cumsum(dim=-1)  # [R, V]
    uniform = torch.cat([torch.rand(1, generator=seqs[i].generator, device=logits.device) for i in rows])  # [R]
    picked = torch.searchsorted(cdf, (uniform * cdf[:, -1])[:, None], right=True).clamp_(max=cdf.shape[1] - 1)
    chosen = picked[:, 0] if ids is None else ids.gather(1, picked)[:, 0]
    for i, token in zip(rows, chosen.tolist()):
        tokens[i] = token
    return tokens
