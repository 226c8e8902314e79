"""The optimizer loop every trainer here shares: LoRA fine-tunes (`trainer.run_training`) and the
land's full-parameter base pretraining (`land.base_model`).

Optimizer step s trains on the examples `BatchPlan` gives it. Each micro-batch's summed target
loss (`loss.loss_sum`) is divided by the step's number of targets before it is back-propagated,
so the gradient is the mean over the step's targets whatever the micro-batch split. Then the
gradient norm is clipped, the learning rate is set from the `LrSchedule`, and AdamW steps. What
a caller does around the steps (progress, checkpoints, stop requests) lives in its callbacks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from gpu_engine.training.batching import BatchPlan
from gpu_engine.training.examples import Example
from gpu_engine.training.loss import collate, loss_sum
from gpu_engine.training.schedule import LrSchedule


@dataclass(frozen=True)
class StepDone:
    """What one optimizer step did; `loss_sum` stays on the device (reading it syncs)."""

    step: int  # optimizer steps done, 1-based
    learning_rate: float  # the rate this step used
    loss_sum: torch.Tensor  # 0-dim, detached: the step's loss summed over its targets
    num_targets: int
    num_tokens: int  # real tokens of the step's micro-batches (pads left out)

    def mean_loss(self) -> float:
        """Per-target loss of the step (one host sync)."""
        return self.loss_sum.item() / self.num_targets


def _no_check(step: int) -> None:
    """Never stops the loop."""


class OptimizerLoop:
    """AdamW over the trainable parameters of `model`, stepping through `plan` on `schedule`.

    `optimizer` is public so a caller can checkpoint and restore its state.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        examples: Sequence[Example],
        plan: BatchPlan,
        schedule: LrSchedule,
        *,
        pad_id: int,
        device: torch.device,
        weight_decay: float,
        max_grad_norm: float | None,
    ) -> None:
        if plan.num_examples != len(examples):
            raise ValueError(f"the plan covers {plan.num_examples} examples, {len(examples)} were given")
        self.model, self.examples, self.plan, self.schedule = model, examples, plan, schedule
        self.pad_id, self.device, self.max_grad_norm = pad_id, device, max_grad_norm
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.params, lr=schedule.learning_rate, weight_decay=weight_decay, foreach=True
        )

    def run(
        self,
        start_step: int,
        on_step: Callable[[StepDone], None],
        before_micro_batch: Callable[[int], None] = _no_check,
    ) -> None:
        """Steps `start_step` .. `schedule.total_steps - 1`, in train mode, `on_step` after each.

        `before_micro_batch(step)` runs before every micro-batch (0-based `step`); it may raise
        to stop the loop mid-step, before the step's optimizer update.
        """
        self.model.train()
        for step in range(start_step, self.schedule.total_steps):
            on_step(self.step(step, before_micro_batch))

    def step(self, step: int, before_micro_batch: Callable[[int], None] = _no_check) -> StepDone:
        """Forward and backward over optimizer step `step`'s micro-batches, then one update."""
        micro_batches = self.plan.micro_batches(step)
        num_targets = sum(self.examples[i].num_loss_tokens for mb in micro_batches for i in mb)
        total_loss = torch.zeros((), device=self.device)
        num_tokens = 0
        for mb in micro_batches:
            before_micro_batch(step)
            batch = collate([self.examples[i] for i in mb], self.pad_id, self.device)
            loss = loss_sum(self.model, batch)
            (loss / num_targets).backward()
            total_loss += loss.detach()
            num_tokens += batch.num_tokens
        learning_rate = self.schedule.learning_rate_at(step)
        if self.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm, foreach=True)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepDone(step + 1, learning_rate, total_loss, num_targets, num_tokens)
