"""The training loop: one LoRA fine-tune from a TrainJobSpec to a PEFT adapter on disk.

`run_training` loads rows, model and the last checkpoint, trains with gradient accumulation
(loss summed over the effective batch's completion tokens, divided by their count), reports
through `on_event` at a bounded rate, checkpoints every `checkpoint_every_steps`, polls a
StopSignal between micro-batches, and saves the adapter with its checksum.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from gpu_engine.adapter_files import adapter_checksum, is_adapter_dir
from gpu_engine.training.batching import BatchPlan
from gpu_engine.training.checkpoint import capture_rng, latest_checkpoint, restore_checkpoint, save_checkpoint
from gpu_engine.training.dataset import load_rows, split_rows
from gpu_engine.training.errors import DatasetInvalidError, DivergedError, JobCancelled, JobPreempted
from gpu_engine.training.events import JobEvent, JobEventKind, StopSignal
from gpu_engine.training.examples import Example, tokenize_rows
from gpu_engine.training.loss import collate, loss_sum, mean_loss
from gpu_engine.training.model_setup import LoadedModel, load_model
from gpu_engine.training.progress import ProgressMeter
from gpu_engine.training.schedule import lr_multiplier, warmup_steps_for
from gpu_engine.training.spec import TrainJobSpec

RESULT_FILE = "training_result.json"  # next to the saved adapter: a rerun of a finished job reuses it

EventSink = Callable[[JobEvent], None]


@dataclass(frozen=True)
class TrainResult:
    adapter_dir: str
    checksum: str
    steps: int
    final_loss: float | None  # mean completion-token loss of the last report window
    eval_loss: float | None  # on the held-out rows; None when none were held out
    train_tokens: int  # real tokens processed by this run (pads left out)
    train_time_s: float  # first micro-batch to last optimizer step of this run
    quantization: str
    device: str
    resumed_from_step: int
    fingerprint: str

    @property
    def tokens_per_s(self) -> float:
        return self.train_tokens / self.train_time_s if self.train_time_s > 0 else 0.0

    def metrics(self) -> dict[str, float]:
        values = {
            "steps": self.steps,
            "final_loss": self.final_loss,
            "eval_loss": self.eval_loss,
            "train_tokens": self.train_tokens,
            "train_time_s": self.train_time_s,
            "tokens_per_s": self.tokens_per_s,
            "resumed_from_step": self.resumed_from_step,
        }
        return {k: float(v) for k, v in values.items() if v is not None}


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
    return _Loop(spec, loaded, train_examples, eval_examples, on_event, stop).run(num_dropped)


def finished_result(spec: TrainJobSpec) -> TrainResult | None:
    """The result of an earlier run of the same spec whose adapter is still intact."""
    try:
        body = json.loads((Path(spec.output_dir) / RESULT_FILE).read_text())
        result = TrainResult(**body)
    except (OSError, json.JSONDecodeError, TypeError):
        return None
    if result.fingerprint != spec.fingerprint() or not is_adapter_dir(spec.output_dir):
        return None
    return result if adapter_checksum(spec.output_dir) == result.checksum else None


class _Loop:
    """One run of the loop; holds the model, optimizer and plan between the helper steps."""

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
        self.plan = BatchPlan(
            [len(ex.input_ids) for ex in train_examples], spec.effective_batch_size, spec.micro_batch_size, spec.seed
        )
        self.total_steps = spec.total_steps(len(train_examples))
        self.warmup_steps = warmup_steps_for(self.total_steps, spec.warmup_ratio)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.params, lr=spec.learning_rate, weight_decay=spec.weight_decay, foreach=True
        )
        self.fingerprint = spec.fingerprint()
        self.eval_loss: float | None = None

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
                "warmup_steps": self.warmup_steps,
            },
        )
        self.model.train()
        meter = ProgressMeter(self.total_steps, start_step, spec.progress_interval_s, time.monotonic())
        window_loss = torch.zeros((), device=device)  # summed over the report window: one sync per report
        window_targets, last_loss, learning_rate = 0, None, spec.learning_rate
        for step in range(start_step, self.total_steps):
            rng_at_step_start = capture_rng(device)
            micro_batches = self.plan.micro_batches(step)
            num_targets = sum(self.train_examples[i].num_loss_tokens for mb in micro_batches for i in mb)
            num_tokens = 0
            for mb in micro_batches:
                self._check_stop(step, rng_at_step_start)
                batch = collate([self.train_examples[i] for i in mb], self.loaded.pad_id, device)
                loss = loss_sum(self.model, batch)
                (loss / num_targets).backward()
                window_loss += loss.detach()
                num_tokens += batch.num_tokens
            learning_rate = spec.learning_rate * lr_multiplier(
                step, self.total_steps, self.warmup_steps, spec.lr_scheduler
            )
            self._optimizer_step(learning_rate)
            window_targets += num_targets
            now_s = time.monotonic()
            meter.step_done(step + 1, num_tokens, now_s)
            if (step + 1) % spec.checkpoint_every_steps == 0 and step + 1 < self.total_steps:
                self._checkpoint(step + 1)
            if meter.is_due(now_s):
                last_loss = window_loss.item() / window_targets
                if not math.isfinite(last_loss):
                    raise DivergedError(f"loss is {last_loss} at step {step + 1}; try a lower learning_rate")
                self._emit(
                    JobEventKind.PROGRESS,
                    step=step + 1,
                    loss=last_loss,
                    eval_loss=self.eval_loss,
                    learning_rate=learning_rate,
                    tokens_per_s=meter.tokens_per_s,
                    eta_s=meter.eta_s,
                )
                meter.mark_reported(now_s)
                window_loss.zero_()
                window_targets = 0
        if self.eval_examples:
            self.eval_loss = self._evaluate()
        return self._save(start_step, last_loss, meter)

    def _optimizer_step(self, learning_rate: float) -> None:
        if self.spec.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.spec.max_grad_norm, foreach=True)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _resume(self) -> int:
        if self.spec.checkpoint_dir is None:
            return 0
        path = latest_checkpoint(self.spec.checkpoint_dir, self.fingerprint)
        if path is None:
            return 0
        state = restore_checkpoint(path, self.model, self.optimizer, self.loaded.device)
        self.eval_loss = state.get("eval_loss")
        return int(state["step"])

    def _check_stop(self, step: int, rng_at_step_start: dict) -> None:
        requested = self.stop.requested
        if requested == "cancel":
            raise JobCancelled(f"cancelled at step {step}")
        if requested == "preempt":
            if self.spec.checkpoint_dir is not None and step > 0:
                self._checkpoint(step, rng_at_step_start)
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
            self.optimizer,
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
