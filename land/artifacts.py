"""The land's models for use outside a land run (the demo, tests): its pretrained base and one
adapter per built-in task, built once and cached side by side under the land's cache folder.

An adapter's folder is named after a hash of all that shapes it — the base's folder (itself named
after the base's config), the bytes of the training rows and the training settings — so changing
any of them trains a new one, and an unchanged rerun reuses the folder. Adapters are trained in
this process by the engine's training loop (no broker), with the land's settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from land.base_model import BaseModelConfig, Progress, built_base, cached_base
from land.land import LandConfig
from land.tasks import builtin_task, materialize_task

DEFAULT_CACHE_DIR = LandConfig.workdir
ADAPTERS_DIR = "adapters"
# TrainJobSpec fields that say where things are or how a run reports, not what it computes
_NOT_SHAPING = frozenset(
    {"base_model_path", "output_dir", "dataset_path", "checkpoint_dir", "checkpoint_every_steps",
     "progress_interval_s", "device"}
)

StepCallback = Callable[[int, int], None]  # (step, total_steps)


def land_base(cache_dir: str | Path = DEFAULT_CACHE_DIR, on_step: Progress | None = None) -> Path:
    """The land's pretrained base (the one `lorastream land` uses), built first if missing."""
    return cached_base(cache_dir, BaseModelConfig(), on_step)


def is_base_cached(cache_dir: str | Path = DEFAULT_CACHE_DIR) -> bool:
    return built_base(cache_dir, BaseModelConfig()) is not None


class TaskAdapter:
    """One built-in task's adapter on a base: where it is cached, and how to build it."""

    def __init__(self, cache_dir: str | Path, base_dir: str | Path, task: str, settings: LandConfig) -> None:
        from gpu_engine.training.spec import TrainJobSpec

        self.task = task
        self.base_dir = Path(base_dir)
        self._cache = Path(cache_dir) / ADAPTERS_DIR
        self._rows_dir = self._cache / f".rows-{task}"
        train_path = materialize_task(builtin_task(task), self._rows_dir).train_path
        self.spec = TrainJobSpec(
            base_model_path=str(self.base_dir),
            output_dir=str(self._cache / f".{task}.{os.getpid()}.tmp"),
            dataset_path=str(train_path),
            eval_fraction=0.0,
            device="cpu",
            progress_interval_s=0.5,
            **settings.hyperparameters(),
        )
        shaping = {k: v for k, v in self.spec.to_dict().items() if k not in _NOT_SHAPING}
        key = {
            "base": self.base_dir.name,
            "task": task,
            "rows_sha256": hashlib.sha256(train_path.read_bytes()).hexdigest(),
            "training": shaping,
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
        self.path = self._cache / f"{task}-{digest}"

    @property
    def steps(self) -> int:
        return self.spec.max_steps

    def is_cached(self) -> bool:
        from gpu_engine.adapter_files import is_adapter_dir

        return is_adapter_dir(self.path)

    def build(self, on_step: StepCallback | None = None) -> Path:
        """Train (unless cached) and return the adapter folder; a crash leaves no half folder."""
        if self.is_cached():
            return self.path
        from gpu_engine.training.trainer import run_training

        def on_event(event) -> None:
            if on_step is not None and event.step is not None:
                on_step(event.step, event.total_steps or self.steps)

        tmp = Path(self.spec.output_dir)
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            run_training(self.spec, on_event)
            shutil.rmtree(self.path, ignore_errors=True)
            os.replace(tmp, self.path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return self.path
