"""Building the land's bases: the cached ones at once, the missing ones pretrained side by side, each
in its own process on one torch thread, with a progress bar per base.

Pretraining a tiny model is one core's work (a second intra-op thread only waits at barriers), so on
a 2-core machine two bases build in the time of one. The longest build starts first.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from queue import Empty

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from land.base_model import BaseModelConfig, built_base, cached_base
from land.bases import LandBase, base_with_progress

_REPORT_EVERY_STEPS = 10
_POLL_S = 0.5


def pretraining_cost(config: BaseModelConfig) -> int:
    """A proxy of a base's pretraining work (tokens seen × weights per layer), to order the builds."""
    per_layer = config.hidden * (2 * config.hidden + 3 * config.intermediate)
    return config.steps * config.batch_size * config.seq_len_tokens * config.layers * per_layer


def build_bases(workdir: Path, bases: Sequence[LandBase], console: Console, max_processes: int) -> dict[str, Path]:
    """Every base's folder under `workdir` (by name), pretraining the ones not cached yet."""
    folders = {base.name: built_base(workdir, base.model) for base in bases}
    missing = sorted((b for b in bases if folders[b.name] is None), key=lambda b: -pretraining_cost(b.model))
    if len(missing) == 1 or (missing and max_processes == 1):
        for base in missing:
            folders[base.name] = base_with_progress(workdir, base.model, console, base.name)
    elif missing:
        folders.update(_build_side_by_side(workdir, missing, console, max_processes))
    return folders


def _build_side_by_side(
    workdir: Path, bases: Sequence[LandBase], console: Console, max_processes: int
) -> dict[str, Path]:
    context = multiprocessing.get_context("spawn")  # no forked copy of this process's threads
    bar = Progress(
        TextColumn("[bold]pretraining {task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"),
        TimeElapsedColumn(),
        console=console,
    )
    with context.Manager() as manager, bar:
        queue = manager.Queue()
        bars = {base.name: bar.add_task(base.name, total=base.model.steps, loss="") for base in bases}
        with ProcessPoolExecutor(min(max_processes, len(bases)), mp_context=context) as pool:
            futures = {
                pool.submit(_pretrain, str(workdir), base.name, base.model, queue): base.name for base in bases
            }
            pending = set(futures)
            while pending:
                _, pending = wait(pending, timeout=_POLL_S, return_when=FIRST_COMPLETED)
                _drain(queue, bar, bars)
            _drain(queue, bar, bars)
            return {name: Path(future.result()) for future, name in futures.items()}


def _drain(queue, bar: Progress, bars: dict[str, int]) -> None:
    while True:
        try:
            name, step, loss = queue.get_nowait()
        except Empty:
            return
        bar.update(bars[name], completed=step, loss=f"loss {loss:.3f}")


def _pretrain(workdir: str, name: str, config: BaseModelConfig, queue) -> str:
    """In a pool process: one torch thread, the base built (or found) in the cache, steps reported."""
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()

    def report(step: int, total: int, loss: float) -> None:
        if step % _REPORT_EVERY_STEPS == 0 or step == total:
            queue.put((name, step, loss))

    return str(cached_base(workdir, config, report))
