"""One LoRA fine-tune job, from a TrainJobSpec to a PEFT adapter on disk.

`run_training` loads rows, model and the last checkpoint, and steps the shared
`OptimizerLoop` (gradient accumulation over the effective batch's completion tokens, clipping,
the `LrSchedule`). Around the steps it reports through `on_event` at a bounded rate, checkpoints
every `checkpoint_every_steps`, polls a StopSignal between micro-batches, and at the end saves
the adapter with its checksum.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from gpu_engine.adapter_files import adapter_checksum
from gpu_engine.training.batching import BatchPlan
from gpu_engine.training.checkpoint import capture_rng, latest_checkpoint, restore_checkpoint, save_checkpoint
from gpu_engine.training.dataset import load_rows, split_rows
from gpu_engine.training.errors import DatasetInvalidError, DivergedError, JobCancelled, JobPreempted
from gpu_engine.training.events import JobEvent, JobEventKind, StopSignal
from gpu_engine.training.examples import Example, tokenize_rows
from gpu_engine.training.loss import mean_loss
from gpu_engine.training.model_setup import LoadedModel, load_model
from gpu_engine.training.optimizer_loop import OptimizerLoop, StepDone
from gpu_engine.training.progress import ProgressMeter
from gpu_engine.training.schedule import LrSchedule, warmup_steps_for
from gpu_engine.training.spec import TrainJobSpec
from gpu_engine.training.train_result import RESULT_FILE, TrainResult, finished_result

EventSink = Callable[[JobEvent], None]


def run_training(
    spec: TrainJobSpec, on_event: EventSink = lambda event: None, stop: StopSignal | None = None
) -> TrainResult:
    """Train, or return the saved result when this spec already finished in `output_dir`.

    Raises TrainingError subclasses: dataset/base/spec problems, DivergedError, JobCancelled,
    JobPreempted (after a checkpoint).
    """
    finished = finished_result(spec)
    if finished is not None:
        return finished
    stop = stop or StopSignal()
    train_rows, eval_rows = split_rows(
        load_rows(
            spec.dataset_path, spec.prompt_field, spec.completion_field,
            max_bytes=spec.max_dataset_bytes, max_rows=spec.max_dataset_rows,
        ),
        spec.eval_fraction,
        spec.max_eval_rows,
        spec.seed,
    )
    loaded = load_model(spec)
    train_examples, num_dropped = tokenize_rows(loaded.tokenizer, train_rows, spec.max_seq_len)
    if not train_examples:
        raise DatasetInvalidError(f"no row keeps a completion token within max_seq_len={spec.max_seq_len}")
    eval_examples, _ = tokenize_rows(loaded.tokenizer, eval_rows, spec.max_seq_len)
    return _FineTuneRun(spec, loaded, train_examples, eval_examples, on_event, stop).run(num_dropped)


class _FineTuneRun:
    """One run: the shared optimizer loop plus this job's events, checkpoints and stop checks."""

    def __init__(
        self,
        spec: TrainJobSpec,
        loaded: LoadedModel,
        train_examples: list[Example],
        eval_examples: list[Example],
        on_event: EventSink,
        stop: StopSignal,
    ) -> None:
        self.spec, self.loaded, self.model = spec, loaded, loaded.model
        self.train_examples, self.eval_examples = train_examples, eval_examples
        self.on_event, self.stop = on_event, stop
        self.total_steps = spec.total_steps(len(train_examples))
        self.schedule = LrSchedule(
            spec.learning_rate,
            self.total_steps,
            warmup_steps_for(self.total_steps, spec.warmup_ratio),
            spec.lr_scheduler,
        )
        plan = BatchPlan(
            [len(ex.input_ids) for ex in train_examples], spec.effective_batch_size, spec.micro_batch_size, spec.seed
        )
        self.steps = OptimizerLoop(
            self.model,
            train_examples,
            plan,
            self.schedule,
            pad_id=loaded.pad_id,
            device=loaded.device,
            weight_decay=spec.weight_decay,
            max_grad_norm=spec.max_grad_norm,
        )
        self.fingerprint = spec.fingerprint()
        self.eval_loss: float | None = None
        self.meter: ProgressMeter | None = None
        self.rng_at_step_start: dict = {}
        self.window_loss = torch.zeros((), device=loaded.device)  # summed over the report window: one sync per report
        self.window_targets = 0
        self.last_loss: float | None = None

    def run(self, num_dropped: int) -> TrainResult:
        spec, device = self.spec, self.loaded.device
        torch.manual_seed(spec.seed)  # dropout draws from the global generator; a resume restores it
        start_step = self._resume()
        self._emit(
            JobEventKind.STARTED,
            step=start_step,
            resumed_from_step=start_step,
            metrics={
                "train_rows": len(self.train_examples),
                "eval_rows": len(self.eval_examples),
                "rows_dropped_too_long": num_dropped,
                "warmup_steps": self.schedule.warmup_steps,
            },
        )
        self.meter = ProgressMeter(self.total_steps, start_step, spec.progress_interval_s, time.monotonic())
        self.rng_at_step_start = capture_rng(device)
        self.steps.run(start_step, self._after_step, self._check_stop)
        if self.eval_examples:
            self.eval_loss = self._evaluate()
        return self._save(start_step, self.last_loss, self.meter)

    def _after_step(self, done: StepDone) -> None:
        """Count the step; checkpoint and report when due."""
        now_s = time.monotonic()
        self.meter.step_done(done.step, done.num_tokens, now_s)
        self.window_loss += done.loss_sum
        self.window_targets += done.num_targets
        if done.step % self.spec.checkpoint_every_steps == 0 and done.step < self.total_steps:
            self._checkpoint(done.step)
        if self.meter.is_due(now_s):
            self.last_loss = self.window_loss.item() / self.window_targets
            if not math.isfinite(self.last_loss):
                raise DivergedError(f"loss is {self.last_loss} at step {done.step}; try a lower learning_rate")
            self._emit(
                JobEventKind.PROGRESS,
                step=done.step,
                loss=self.last_loss,
                eval_loss=self.eval_loss,
                learning_rate=done.learning_rate,
                tokens_per_s=self.meter.tokens_per_s,
                eta_s=self.meter.eta_s,
            )
            self.meter.mark_reported(now_s)
            self.window_loss.zero_()
            self.window_targets = 0
        self.rng_at_step_start = capture_rng(self.loaded.device)  # nothing draws between here and the next step

    def _resume(self) -> int:
        if self.spec.checkpoint_dir is None:
            return 0
        path = latest_checkpoint(self.spec.checkpoint_dir, self.fingerprint)
        if path is None:
            return 0
        state = restore_checkpoint(path, self.model, self.steps.optimizer, self.loaded.device)
        self.eval_loss = state.get("eval_loss")
        return int(state["step"])

    def _check_stop(self, step: int) -> None:
        """Before each micro-batch of 0-based `step`: a preempt checkpoints the steps done so far."""
        requested = self.stop.requested
        if requested == "cancel":
            raise JobCancelled(f"cancelled at step {step}")
        if requested == "preempt":
            if self.spec.checkpoint_dir is not None and step > 0:
                self._checkpoint(step, self.rng_at_step_start)
            raise JobPreempted(step)

    def _checkpoint(self, step: int, rng_state: dict | None = None) -> None:
        if self.spec.checkpoint_dir is None:
            return
        if self.eval_examples:
            self.eval_loss = self._evaluate()
        rng_state = rng_state or capture_rng(self.loaded.device)
        path = save_checkpoint(
            self.spec.checkpoint_dir,
            step,
            self.model,
            self.steps.optimizer,
            rng_state,
            {"fingerprint": self.fingerprint, "eval_loss": self.eval_loss},
        )
        self._emit(JobEventKind.CHECKPOINTED, step=step, eval_loss=self.eval_loss, checkpoint_dir=str(path))

    def _evaluate(self) -> float:
        return mean_loss(
            self.model, self.eval_examples, self.spec.micro_batch_size, self.loaded.pad_id, self.loaded.device
        )

    def _save(self, start_step: int, last_loss: float | None, meter: ProgressMeter) -> TrainResult:
        out = Path(self.spec.output_dir)
        tmp = out.with_name(f".tmp-{out.name}-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save_pretrained(str(tmp), safe_serialization=True)
        shutil.rmtree(out, ignore_errors=True)
        os.rename(tmp, out)
        result = TrainResult(
            adapter_dir=str(out),
            checksum=adapter_checksum(out),
            steps=self.total_steps,
            final_loss=last_loss,
            eval_loss=self.eval_loss,
            train_tokens=meter.num_tokens,
            train_time_s=meter.elapsed_s,
            quantization=self.loaded.quantization,
            device=str(self.loaded.device),
            resumed_from_step=start_step,
            fingerprint=self.fingerprint,
        )
        (out / RESULT_FILE).write_text(json.dumps(asdict(result)))
        return result

    def _emit(self, kind: JobEventKind, **fields) -> None:
        self.on_event(
            JobEvent(
                kind,
                total_steps=self.total_steps,
                quantization=self.loaded.quantization,
                device=str(self.loaded.device),
                **fields,
            )
        )
