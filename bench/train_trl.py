"""The training benchmark's reference: TRL's `SFTTrainer`, configured as a competent user would.

Same base, LoRA (r, alpha, dropout, targets), AdamW (lr, weight decay), cosine schedule with the
same warmup steps, grad-norm clip, micro-batch × accumulation, steps, seed and fp32 as our job; the
data is our tokenized examples handed over as `input_ids` + `completion_mask`, so both train on the
same tokens. Completion-only loss. What a user would change from TRL's defaults on this machine:
`bf16` off (fp32, as ours on CPU), `gradient_checkpointing` off (the model fits; ours does not
checkpoint either), no saving or reporting during the run, the loss logged every step. TRL's own
speed choices stay on: its fused LM head (log-probs computed tile by tile over the vocabulary, no
`[B, T, V]` logits kept; TRL scores only the target positions on Triton devices, every position
elsewhere, as on this CPU) and its default fused AdamW. Two ways to avoid padding are measured, and
the faster is the reference:
- `trl_length_grouped`: `train_sampling_strategy="group_by_length"` (transformers'
  LengthGroupedSampler: micro-batches of rows of near length), padded micro-batches;
- `trl_padding_free`: `padding_free=True` (each micro-batch's rows concatenated into one row,
  sequence boundaries from `position_ids`; transformers builds the block-diagonal causal mask).
Tokens/s counts real tokens (Trainer's `num_input_tokens_seen`, non-padding) over `train()`'s loop,
timed from the `on_train_begin` to the `on_train_end` callback.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from bench.train_runs import last_window_mean

CONFIGS = ("trl_length_grouped", "trl_padding_free")


def trl_version() -> str:
    import trl

    return trl.__version__


def _dataset(examples):
    from datasets import Dataset

    return Dataset.from_dict(
        {
            "input_ids": [list(ex.input_ids) for ex in examples],
            "completion_mask": [[0] * ex.first_target + [1] * ex.num_loss_tokens for ex in examples],
        }
    )


def sft_config(spec, config: str, out_dir: Path, total_steps: int):
    """The `SFTConfig` of `config` (one of CONFIGS) for `spec`'s job."""
    from trl import SFTConfig

    from gpu_engine.training.schedule import warmup_steps_for

    if config not in CONFIGS:
        raise ValueError(f"config must be one of {CONFIGS}")
    return SFTConfig(
        output_dir=str(out_dir),
        max_steps=total_steps,
        per_device_train_batch_size=spec.micro_batch_size,
        gradient_accumulation_steps=spec.grad_accum_steps,
        learning_rate=spec.learning_rate,
        lr_scheduler_type=spec.lr_scheduler,
        warmup_steps=warmup_steps_for(total_steps, spec.warmup_ratio),
        weight_decay=spec.weight_decay,
        max_grad_norm=spec.max_grad_norm if spec.max_grad_norm is not None else 0.0,
        seed=spec.seed,
        max_length=None,  # the examples are already cut to spec.max_seq_len
        completion_only_loss=True,
        train_sampling_strategy="group_by_length" if config == "trl_length_grouped" else "random",
        padding_free=config == "trl_padding_free",
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=spec.device == "cpu",
        include_num_input_tokens_seen="non_padding",
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        dataloader_pin_memory=False,
    )


def run_trl(spec, examples, config: str, out_dir: Path) -> dict:
    """Train `spec`'s LoRA on `examples` with `SFTTrainer` under `config`; the adapter goes to `out_dir`."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTTrainer

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            self.end = time.perf_counter()

    clock = Clock()
    lora = LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=list(spec.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = AutoModelForCausalLM.from_pretrained(spec.base_model_path, dtype=torch.float32)
    trainer = SFTTrainer(
        model=model,
        args=sft_config(spec, config, out_dir, spec.total_steps(len(examples))),
        train_dataset=_dataset(examples),
        processing_class=AutoTokenizer.from_pretrained(spec.base_model_path),
        peft_config=lora,
        callbacks=[clock],
    )
    trainer.train()
    trainer.model.save_pretrained(str(out_dir))
    step_losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {
        "tokens": int(trainer.state.num_input_tokens_seen),
        "seconds": clock.end - clock.start,
        "final_loss": last_window_mean(step_losses),
        "adapter_dir": str(out_dir),
    }
