"""Our side of the training benchmark: the job runner as shipped, and our optimizer loop with one of
its choices undone at a time, so that each choice's share of the speed is measured on its own.

Our choices, and what a variant puts in their place:
- `no_length_grouping`: a step's examples are cut into micro-batches in stream order instead of
  longest first, so each micro-batch pads to the longest of four random rows.
- `full_vocab_logits`: the output head runs on every position and the loss picks the targets out
  of the `[B, T, V]` logits (`model(input_ids).logits`), as a plain transformers loop does.
- `attention_mask`: the padding mask is passed to the model (the plain causal path is left).
Everything else (the plan's examples per step, the loss normalisation, AdamW, clipping, the
schedule, the seed) is the shared `OptimizerLoop`'s.
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Callable
from unittest import mock

import torch
import torch.nn.functional as F

from gpu_engine.training.batching import BatchPlan

VARIANTS = ("no_length_grouping", "full_vocab_logits", "attention_mask")


def last_window_mean(step_losses: list[float]) -> float:
    """Mean loss of the last 10% of optimizer steps (at least one)."""
    return statistics.fmean(step_losses[-max(1, len(step_losses) // 10) :])


def run_ours(spec) -> dict:
    """The training job runner as a job runs it (`trainer.run_training`), timed over its loop."""
    from gpu_engine.training.events import JobEventKind
    from gpu_engine.training.trainer import run_training

    shutil.rmtree(spec.output_dir, ignore_errors=True)
    step_losses: list[float] = []
    result = run_training(spec, lambda e: step_losses.append(e.loss) if e.kind is JobEventKind.PROGRESS else None)
    return {
        "tokens": result.train_tokens,
        "seconds": result.train_time_s,
        "final_loss": last_window_mean(step_losses),
        "adapter_dir": result.adapter_dir,
    }


class StreamOrderPlan(BatchPlan):
    """The same examples per step, cut into micro-batches in stream order (no length grouping)."""

    def micro_batches(self, step: int) -> list[list[int]]:
        indices, m = self.step_indices(step), self.micro_batch_size
        return [indices[i : i + m] for i in range(0, len(indices), m)]


def full_vocab_loss_sum(model: torch.nn.Module, batch) -> torch.Tensor:
    """`loss.loss_sum` computed the plain way: logits at every position, then the targets picked."""
    causal_lm = model.get_base_model()
    logits = causal_lm(input_ids=batch.input_ids, use_cache=False).logits  # [B, T, V]
    return F.cross_entropy(logits[batch.predict_mask].float(), batch.targets, reduction="sum")


def masked_loss_sum(model: torch.nn.Module, batch) -> torch.Tensor:
    """`loss.loss_sum` with the padding mask passed to the decoder (pads are the positions past each row's end)."""
    causal_lm = model.get_base_model()
    ends = batch.predict_mask.long().cumsum(1).argmax(1) + 2  # [B] first pad position (last target + 1, + 1)
    attention_mask = (torch.arange(batch.input_ids.shape[1], device=ends.device)[None, :] < ends[:, None]).long()
    hidden = causal_lm.get_decoder()(
        input_ids=batch.input_ids, attention_mask=attention_mask, use_cache=False
    ).last_hidden_state  # [B, T, H]
    logits = causal_lm.get_output_embeddings()(hidden[batch.predict_mask])  # [K, V]
    return F.cross_entropy(logits.float(), batch.targets, reduction="sum")


def run_variant(spec, variant: str) -> dict:
    """Our `OptimizerLoop` on `spec`'s model and data with `variant` (one of VARIANTS) undone.

    The loss is swapped inside the loop's module for the run's duration: the loop takes no loss
    function argument (the hook this would need is `OptimizerLoop(..., loss_fn=loss_sum)`).
    """
    from gpu_engine.training import optimizer_loop
    from gpu_engine.training.dataset import load_rows
    from gpu_engine.training.examples import tokenize_rows
    from gpu_engine.training.model_setup import load_model
    from gpu_engine.training.schedule import LrSchedule, warmup_steps_for

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}")
    loaded = load_model(spec)
    rows = load_rows(spec.dataset_path, spec.prompt_field, spec.completion_field)
    examples, _ = tokenize_rows(loaded.tokenizer, rows, spec.max_seq_len)
    total = spec.total_steps(len(examples))
    plan_cls = StreamOrderPlan if variant == "no_length_grouping" else BatchPlan
    plan = plan_cls([len(ex.input_ids) for ex in examples], spec.effective_batch_size, spec.micro_batch_size, spec.seed)
    schedule = LrSchedule(
        spec.learning_rate, total, warmup_steps_for(total, spec.warmup_ratio), spec.lr_scheduler
    )
    loop = optimizer_loop.OptimizerLoop(
        loaded.model,
        examples,
        plan,
        schedule,
        pad_id=loaded.pad_id,
        device=loaded.device,
        weight_decay=spec.weight_decay,
        max_grad_norm=spec.max_grad_norm,
    )
    losses: dict[str, Callable] = {"full_vocab_logits": full_vocab_loss_sum, "attention_mask": masked_loss_sum}
    step_losses: list[float] = []
    tokens = 0

    def on_step(done) -> None:
        nonlocal tokens
        tokens += done.num_tokens
        step_losses.append(done.mean_loss())

    torch.manual_seed(spec.seed)
    with mock.patch.object(optimizer_loop, "loss_sum", losses.get(variant, optimizer_loop.loss_sum)):
        start = time.perf_counter()
        loop.run(0, on_step)
        seconds = time.perf_counter() - start
    return {"tokens": tokens, "seconds": seconds, "final_loss": last_window_mean(step_losses), "adapter_dir": None}


@torch.no_grad()
def held_out_loss(model_dir: str, adapter_dir: str | None, examples) -> float:
    """Per-token completion loss of base (+ adapter) on `examples`, one row at a time (no padding)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, adapter_dir)
    model.eval()
    total, count = 0.0, 0
    for ex in examples:
        loss = model(input_ids=torch.tensor([ex.input_ids]), labels=torch.tensor([ex.labels()])).loss
        total += loss.item() * ex.num_loss_tokens
        count += ex.num_loss_tokens
    return total / count
