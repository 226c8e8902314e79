"""`lorastream land` (`make land`): LoRA Land in miniature, end to end, on the embedded broker.

1. the tiny base: pretrained once on generic text (`base_model`), then cached;
2. the tasks' train/test JSONL written under the run folder;
3. the embedded Tansu broker; training workers in this process (each job a subprocess); one
   TrainingRequest per task on Kafka → progress events → completed + AdapterEvent;
4. an inference consumer serving the base and every new adapter at once; every test prompt to
   the base and to its task's adapter in one mixed run through Kafka (`evaluate`);
5. the leaderboard, and docs/land.md + docs/bench/land.json|png.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from land.base_model import BaseModelConfig, built_base, cached_base
from land.evaluate import EvalConfig
from land.land_doc import write_land_report
from land.report import leaderboard
from land.results import EvalResult
from land.session import serve_and_evaluate
from land.tasks import BUILTIN_TASKS, builtin_task, materialize_task
from land.training_run import (
    FineTune,
    TrainedAdapter,
    balanced_job_ids,
    running_workers,
    train_all,
)
from consumers.training.config import TrainWorkerConfig
from streamer import (
    KafkaConfig,
    TansuBroker,
    TopicNames,
    default_topic_specs,
    ensure_topics,
)

ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LandConfig:
    """The land run. Fine-tune defaults depart from LoRA Land's (r 8, q/v, lr 2e-4, 1 epoch) on
    purpose: a ~1M-parameter base on a 2-core CPU gets a few hundred steps, so rank 16 on every
    projection with a 5e-3 peak learning rate (see docs/land.md)."""

    workdir: str = ".cache/land"
    docs_dir: str | None = "docs"  # None: write no docs (quick runs, tests)
    tasks: tuple[str, ...] = tuple(BUILTIN_TASKS)
    base: BaseModelConfig = field(default_factory=BaseModelConfig)
    steps: int = 150
    learning_rate: float = 5e-3
    rank: int = 16
    target_modules: tuple[str, ...] = ALL_PROJECTIONS
    batch_size: int = 16
    max_seq_len: int = 128
    num_workers: int = 2
    torch_threads: int = 1  # of this process (pretraining, serving); each training job gets cores / workers
    max_test_rows: int | None = None
    adapter_prefix: str = "land/"

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        unknown = [t for t in self.tasks if t not in BUILTIN_TASKS]
        if not self.tasks or unknown:
            raise ValueError(f"tasks must be built-in ({', '.join(BUILTIN_TASKS)}); unknown: {unknown}")
        if min(self.steps, self.rank, self.batch_size, self.num_workers, self.torch_threads) < 1:
            raise ValueError("steps, rank, batch_size, num_workers and torch_threads must be >= 1")
        if not 0 < self.learning_rate <= 1:
            raise ValueError("learning_rate must be within (0, 1]")
        if self.max_test_rows is not None and self.max_test_rows < 1:
            raise ValueError("max_test_rows must be >= 1")

    def replace(self, **changes) -> LandConfig:
        return dataclasses.replace(self, **changes)

    def hyperparameters(self) -> dict:
        """The TrainingRequest hyperparameters of every fine-tune."""
        return {
            "r": self.rank,
            "alpha": 2.0 * self.rank,
            "dropout": 0.0,
            "target_modules": list(self.target_modules),
            "learning_rate": self.learning_rate,
            "lr_scheduler": "cosine",
            "warmup_ratio": 0.05,
            "effective_batch_size": self.batch_size,
            "micro_batch_size": self.batch_size,
            "max_steps": self.steps,
            "max_seq_len": self.max_seq_len,
            "quantize": "none",
        }


def quick_config(workdir: str) -> LandConfig:
    """A smoke run in a few minutes: smaller base, three tasks, few steps and rows, no docs."""
    return LandConfig(
        workdir=workdir,
        docs_dir=None,
        tasks=("sentiment", "topic", "data_to_text"),
        base=BaseModelConfig(steps=200, corpus_lines=2000),
        steps=30,
        max_test_rows=20,
    )


@dataclass(frozen=True)
class LandOutcome:
    result: EvalResult
    trained: tuple[TrainedAdapter, ...]
    timings_s: dict[str, float]


async def run_land(config: LandConfig, console: Console | None = None) -> LandOutcome:
    """The whole run; one torch thread by default: on a shared 2-core CPU a second intra-op thread
    that gets descheduled stalls every op at its barrier (measured: 8x slower pretraining steps)."""
    import torch
    from transformers.utils import logging as hf_logging

    threads_before = torch.get_num_threads()
    torch.set_num_threads(config.torch_threads)
    hf_logging.disable_progress_bar()
    try:
        return await _run(config, console or Console(highlight=False))
    finally:
        torch.set_num_threads(threads_before)


async def _run(config: LandConfig, console: Console) -> LandOutcome:
    timings: dict[str, float] = {}
    started = time.monotonic()
    console.rule("[bold]lorastream land — LoRA Land in miniature")
    workdir = Path(config.workdir)
    base_dir = await asyncio.to_thread(base_with_progress, workdir, config.base, console)
    timings["base_s"] = time.monotonic() - started
    run_dir = workdir / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    tasks = [builtin_task(name) for name in config.tasks]
    files = {task.name: materialize_task(task, run_dir / "data") for task in tasks}
    adapter_ids = {task.name: f"{config.adapter_prefix}{task.name}" for task in tasks}
    with TansuBroker() as broker:
        kafka = KafkaConfig(bootstrap_servers=broker.bootstrap_servers)
        topics = TopicNames("lorastream")
        console.print(f"embedded Tansu broker at [cyan]{broker.bootstrap_servers}[/]; base [cyan]{base_dir}[/]")
        await ensure_topics(kafka, default_topic_specs(topics, training_partitions=config.num_workers))
        phase = time.monotonic()
        trained = await _fine_tune(kafka, topics, config, base_dir, run_dir, files, adapter_ids, console)
        timings["train_s"] = time.monotonic() - phase
        phase = time.monotonic()
        eval_config = EvalConfig(max_test_rows=config.max_test_rows)
        result = await serve_and_evaluate(
            kafka, topics, base_dir, run_dir / "adapters", tasks, adapter_ids, eval_config, console
        )
        timings["eval_s"] = time.monotonic() - phase
    timings["total_s"] = time.monotonic() - started
    console.print(leaderboard(result))
    console.print(
        f"mean gain [bold]{result.mean_gain_points:+.1f}[/] points over {len(tasks)} tasks; "
        f"wall time {timings['total_s']:.0f}s (base {timings['base_s']:.0f}s, fine-tunes {timings['train_s']:.0f}s, "
        f"evaluation {timings['eval_s']:.0f}s)"
    )
    outcome = LandOutcome(result, tuple(trained), timings)
    if config.docs_dir is not None:
        paths = write_land_report(Path(config.docs_dir), result, _summary(config, outcome), base_dir)
        console.print("wrote " + ", ".join(str(p) for p in paths))
    return outcome


def base_with_progress(workdir: Path, config: BaseModelConfig, console: Console) -> Path:
    """The land's base for `config` under `workdir`: pretrained once with a bar on `console`, then cached."""
    built = built_base(workdir, config)
    if built is not None:
        return built
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("[bold]pretraining base"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"),
        TimeRemainingColumn(),
        console=console,
    )
    with bar:
        progress_id = bar.add_task("base", total=config.steps, loss="")
        return cached_base(
            workdir, config, lambda step, total, loss: bar.update(progress_id, completed=step, loss=f"loss {loss:.3f}")
        )


async def _fine_tune(kafka, topics, config: LandConfig, base_dir: Path, run_dir: Path, files, adapter_ids, console):
    worker_configs = [
        TrainWorkerConfig(
            base_model_path=str(base_dir),
            adapter_root=str(run_dir / "adapters"),
            work_dir=str(run_dir / "jobs"),
            dataset_roots=(str((run_dir / "data").resolve()),),
            device="cpu",
            job_threads=max(1, (os.cpu_count() or 1) // config.num_workers),
            checkpoint_every_steps=max(config.steps, 1),
            progress_interval_s=1.0,
            training_partitions=config.num_workers,
        )
        for _ in range(config.num_workers)
    ]
    fine_tunes = [
        FineTune(name, adapter_ids[name], str(files[name].train_path.resolve()), config.hyperparameters())
        for name in config.tasks
    ]
    job_ids = balanced_job_ids(list(config.tasks), config.num_workers, salt=base_dir.name)
    console.print(f"fine-tuning {len(fine_tunes)} adapters through training events ({config.num_workers} workers)")
    async with running_workers(kafka, topics, worker_configs):
        return await train_all(kafka, topics, fine_tunes, job_ids, console)


def _summary(config: LandConfig, outcome: LandOutcome) -> dict:
    """What land.json records beside the scores: timings, configuration, each fine-tune's result."""
    return {
        "timings_s": outcome.timings_s,
        "config": {
            "tasks": list(config.tasks),
            "steps": config.steps,
            "learning_rate": config.learning_rate,
            "rank": config.rank,
            "target_modules": list(config.target_modules),
            "batch_size": config.batch_size,
            "num_workers": config.num_workers,
            "base": dataclasses.asdict(config.base),
        },
        "training": {
            t.task: {
                "adapter_id": t.adapter_id,
                "version": t.registered.version,
                "checksum": t.registered.checksum,
                "final_loss": t.completed.loss,
                "metrics": t.completed.metrics,
            }
            for t in outcome.trained
        },
    }
