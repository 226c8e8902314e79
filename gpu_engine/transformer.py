"""The forward pass over one packed step. Pure torch; knows nothing of requests.

Embeddings, then the family's block function for every layer (`families/blocks.py`: a pre-norm
block or Phi-2's parallel block), then the final norm and the LM head for the rows to sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gpu_engine.attention import AttentionPlan
from gpu_engine.families.blocks import BLOCKS, Step
from gpu_engine.families.layers import soft_cap
from gpu_engine.kv_cache import KVCache
from gpu_engine.lora_ops import LoraStep
from gpu_engine.model_loader import BaseModel


def forward(
    model: BaseModel,
    kv_cache: KVCache,
    input_ids: torch.Tensor,
    positions: torch.Tensor,
    plan: AttentionPlan,
    lora: LoraStep,
    sample_rows: torch.Tensor,
) -> torch.Tensor:
    """input_ids, positions: [T]; sample_rows: [B] rows whose next token is wanted -> logits [B, V] fp32."""
    h = F.embedding(input_ids, model.embed)  # [T, H]
    if model.embed_scale is not None:
        h = h * model.embed_scale
    rope = {kind: (cos[positions], sin[positions]) for kind, (cos, sin) in model.rope_tables.items()}  # [T, R]
    step = Step(kv_cache, plan, lora, rope)
    block = BLOCKS[model.family.block]
    for i, layer in enumerate(model.layers):
        h = block(model, i, layer, h, step)
    last = model.final_norm(h[sample_rows])  # [B, H]
    logits = F.linear(last, model.lm_head, model.lm_head_bias)  # [B, V]
    return soft_cap(logits, model.final_softcap).float()
