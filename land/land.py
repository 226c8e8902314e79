"""`lorastream land` (`make land`): LoRA Land in miniature — a matrix of bases × tasks — end to end,
on the embedded broker.

1. the bases: two small ones of two families (Llama, Qwen2) and a larger few-shot one, each
   pretrained once on generic text (`base_model`, `bases`), then cached;
2. the tasks' train/test JSONL written under the run folder;
3. the embedded Tansu broker; per small base, training workers of that base in this process (each
   job a subprocess); one TrainingRequest per task naming the base → progress events → completed +
   AdapterEvent;
4. every base served at once, each by its own inference consumer in its own lane; every test prompt
   of every (base, task) to the base and to its adapter, and every few-shot prompt to the larger
   base, in one mixed run through Kafka (`matrix_run`);
5. the matrix, and docs/land.md + docs/bench/land.json|png.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from land.base_model import BaseModelConfig
from land.base_builds import build_bases
from land.bases import DEFAULT_BASES, FEWSHOT_BASE, LandBase, model_summary
from land.evaluate import EvalConfig
from land.fewshot import DEFAULT_MAX_SHOTS
from land.land_doc import write_land_report
from land.matrix import MatrixResult
from land.matrix_report import fewshot_line, matrix_table
from land.matrix_run import LandLane, fewshot_plan, serve_and_evaluate_matrix
from land.tasks import BUILTIN_TASKS, builtin_task, materialize_task
from land.training_run import FineTune, TrainedAdapter, fine_tune_base, trained_summary
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
    bases: tuple[LandBase, ...] = DEFAULT_BASES  # the matrix's rows: each fine-tuned on every task
    fewshot_base: LandBase | None = FEWSHOT_BASE  # the few-shot column (None: none)
    max_shots: int = DEFAULT_MAX_SHOTS  # examples in a few-shot prompt, fewer where they do not fit
    steps: int = 150
    learning_rate: float = 5e-3
    rank: int = 16
    target_modules: tuple[str, ...] = ALL_PROJECTIONS
    batch_size: int = 16
    max_seq_len: int = 128
    num_workers: int = 2
    torch_threads: int = 1  # of this process (pretraining, serving); each training job gets cores / workers
    pretrain_processes: int = 2  # bases pretrained side by side, one process (one thread) each
    max_test_rows: int | None = None
    adapter_prefix: str = "land/"

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "bases", tuple(self.bases))
        names = [b.name for b in self.bases] + ([self.fewshot_base.name] if self.fewshot_base else [])
        if not self.bases or len(set(names)) != len(names):
            raise ValueError(f"bases must be one or more, with distinct names; got {names}")
        configs = [b.model for b in self.bases] + ([self.fewshot_base.model] if self.fewshot_base else [])
        if len({c.fingerprint() for c in configs}) != len(configs):
            raise ValueError("two bases of the land would be the same model")
        if self.max_shots < 0:
            raise ValueError("max_shots must be >= 0")
        unknown = [t for t in self.tasks if t not in BUILTIN_TASKS]
        if not self.tasks or unknown:
            raise ValueError(f"tasks must be built-in ({', '.join(BUILTIN_TASKS)}); unknown: {unknown}")
        if min(self.steps, self.rank, self.batch_size, self.num_workers, self.torch_threads, self.pretrain_processes) < 1:
            raise ValueError("steps, rank, batch_size, num_workers, torch_threads and pretrain_processes must be >= 1")
        if not 0 < self.learning_rate <= 1:
            raise ValueError("learning_rate must be within (0, 1]")
        if self.max_test_rows is not None and self.max_test_rows < 1:
            raise ValueError("max_test_rows must be >= 1")

    @property
    def base(self) -> BaseModelConfig:
        """The first base's config (the one the demo and `land --base-only` use)."""
        return self.bases[0].model

    @property
    def every_base(self) -> tuple[LandBase, ...]:
        """The bases to build: the fine-tuned ones, then the few-shot one."""
        return (*self.bases, *([self.fewshot_base] if self.fewshot_base else []))

    def describe(self) -> dict:
        """The run's settings as land.json records them."""
        return {
            "tasks": list(self.tasks),
            "steps": self.steps,
            "learning_rate": self.learning_rate,
            "rank": self.rank,
            "target_modules": list(self.target_modules),
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "max_shots": self.max_shots,
        }

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
    """A smoke run in a few minutes: one base, less pretrained, no few-shot column; three tasks, few
    steps and rows, no docs."""
    return LandConfig(
        workdir=workdir,
        docs_dir=None,
        tasks=("sentiment", "topic", "data_to_text"),
        bases=(LandBase("llama", BaseModelConfig(steps=200, corpus_lines=2000)),),
        fewshot_base=None,
        steps=30,
        max_test_rows=20,
    )


@dataclass(frozen=True)
class LandOutcome:
    result: MatrixResult
    trained: dict[str, tuple[TrainedAdapter, ...]]  # base name → its adapters
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
    base_dirs = await asyncio.to_thread(build_bases, workdir, config.every_base, console, config.pretrain_processes)
    timings["base_s"] = time.monotonic() - started
    run_dir = workdir / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    tasks = [builtin_task(name) for name in config.tasks]
    files = {task.name: materialize_task(task, run_dir / "data") for task in tasks}
    lanes = [
        LandLane(
            base.name,
            base_dirs[base.name],
            run_dir / "adapters",
            {task.name: f"{config.adapter_prefix}{base.name}/{task.name}" for task in tasks},
        )
        for base in config.bases
    ]
    with TansuBroker() as broker:
        kafka = KafkaConfig(bootstrap_servers=broker.bootstrap_servers)
        topics = TopicNames("lorastream")
        console.print(f"embedded Tansu broker at [cyan]{broker.bootstrap_servers}[/]")
        await ensure_topics(kafka, default_topic_specs(topics, training_partitions=config.num_workers))
        phase = time.monotonic()
        trained = {}
        for lane in lanes:
            fine_tunes = [
                FineTune(name, lane.adapter_ids[name], str(files[name].train_path.resolve()),
                         config.hyperparameters(), base_model=lane.base_name)
                for name in config.tasks
            ]
            console.print(
                f"fine-tuning {len(fine_tunes)} adapters of [cyan]{lane.name}[/] ({lane.base_name}) through "
                f"training events ({config.num_workers} workers of that base)"
            )
            trained[lane.name] = tuple(await fine_tune_base(
                kafka, topics, lane.model_dir, fine_tunes, run_dir, lane.adapter_root, config.num_workers, console
            ))
        timings["train_s"] = time.monotonic() - phase
        phase = time.monotonic()
        eval_config = EvalConfig(max_test_rows=config.max_test_rows)
        fewshot = None
        if config.fewshot_base is not None:
            few = LandLane(config.fewshot_base.name, base_dirs[config.fewshot_base.name])
            # the longest context it was pretrained on: a longer prompt would be new to it
            context = config.fewshot_base.model.seq_len_tokens
            fewshot = (few, fewshot_plan(few, tasks, context, config.max_shots, eval_config))
        result = await serve_and_evaluate_matrix(kafka, topics, tasks, lanes, fewshot, eval_config, console)
        timings["eval_s"] = time.monotonic() - phase
    timings["total_s"] = time.monotonic() - started
    console.print(matrix_table(result))
    for name, scores in result.bases.items():
        console.print(f"{name}: mean gain [bold]{scores.mean_gain_points:+.1f}[/] points over {len(tasks)} tasks")
    if result.fewshot is not None:
        console.print(fewshot_line(result))
    console.print(
        f"wall time {timings['total_s']:.0f}s (bases {timings['base_s']:.0f}s, fine-tunes {timings['train_s']:.0f}s, "
        f"evaluation {timings['eval_s']:.0f}s)"
    )
    outcome = LandOutcome(result, trained, timings)
    if config.docs_dir is not None:
        paths = write_land_report(Path(config.docs_dir), result, _summary(config, outcome, base_dirs))
        console.print("wrote " + ", ".join(str(p) for p in paths))
    return outcome


def _summary(config: LandConfig, outcome: LandOutcome, base_dirs: dict[str, Path]) -> dict:
    """What land.json records beside the scores: timings, configuration, the bases, each fine-tune."""
    return {
        "timings_s": outcome.timings_s,
        "config": config.describe(),
        "models": {base.name: model_summary(base, base_dirs[base.name]) for base in config.every_base},
        "training": {base: trained_summary(trained) for base, trained in outcome.trained.items()},
    }
