"""Micro-batches as tensors, and the loss summed over their target tokens only.

The targets are an example's completion tokens (a fine-tune) or every token after a block's
first (pretraining, `examples.packed_examples`). Rows are right-padded and no attention mask is
passed: with a causal mask a real token never sees the pads after it, so the model takes the
plain causal attention path. The output head runs only on positions that predict a target (a
prompt's logits are never computed).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gpu_engine.training.examples import Example


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor  # [B, T] right-padded
    predict_mask: torch.Tensor  # [B, T] bool: position t predicts a target token t + 1
    targets: torch.Tensor  # [K] the predicted tokens, row-major (K = predict_mask.sum())
    num_tokens: int  # real tokens (pads left out)


def collate(examples: list[Example], pad_id: int, device: torch.device) -> Batch:
    lengths = [len(ex.input_ids) for ex in examples]
    width = max(lengths)
    rows = [list(ex.input_ids) + [pad_id] * (width - len(ex.input_ids)) for ex in examples]
    input_ids = torch.tensor(rows, dtype=torch.long)  # [B, T]
    positions = torch.arange(width)[None, :]  # [1, T]
    first = torch.tensor([ex.first_target - 1 for ex in examples])[:, None]  # [B, 1]
    last = torch.tensor(lengths)[:, None] - 1  # [B, 1] exclusive: the last token predicts nothing
    predict_mask = (positions >= first) & (positions < last)  # [B, T]
    targets = input_ids[:, 1:][predict_mask[:, :-1]]  # [K]
    return Batch(input_ids.to(device), predict_mask.to(device), targets.to(device), sum(lengths))


def loss_sum(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Summed cross-entropy of the target tokens of `batch` (a 0-dim tensor).

    `model` is a causal LM, peft-wrapped (a LoRA fine-tune) or not (full-parameter training);
    its decoder and output head are called directly.
    """
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = causal_lm.get_decoder()(input_ids=batch.input_ids, use_cache=False).last_hidden_state  # [B, T, H]
    logits = causal_lm.get_output_embeddings()(hidden[batch.predict_mask])  # [K, V]
    return F.cross_entropy(logits.float(), batch.targets, reduction="sum")


@torch.no_grad()
def mean_loss(
    model: torch.nn.Module, examples: list[Example], micro_batch_size: int, pad_id: int, device: torch.device
) -> float:
    """Per-token completion loss over `examples` with dropout off (eval mode), then back to train."""
    was_training = model.training
    model.eval()
    ordered = sorted(examples, key=lambda ex: len(ex.input_ids))
    total = torch.zeros((), device=device)
    for start in range(0, len(ordered), micro_batch_size):
        total += loss_sum(model, collate(ordered[start : start + micro_batch_size], pad_id, device))
    model.train(was_training)
    return total.item() / sum(ex.num_loss_tokens for ex in examples)
