"""`lorastream demo`: what adapters do, shown through the whole path on this machine, no Kafka install.

The land's pretrained base (a tiny Llama that knows a little about a small world, see docs/land.md)
and one adapter per demo task, trained on the land's tasks with the land's settings. All are
built on the first run and cached under `.cache/land/` (adapters keyed by their inputs), so later
runs start in seconds. Then the embedded Tansu broker and an inference consumer in this process
(engine on its own thread) answer the same prompts from the base and from every adapter, in one
mixed burst through Kafka, shown side by side; one answer is streamed token by token first.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from cli.commands import console
from schemas import Final

DEMO_TASKS = ("sentiment", "topic", "data_to_text")  # two label sets and a sentence: visibly different jobs
ADAPTER_PREFIX = "land/"
_BUILD_ESTIMATE = "about 3-5 minutes on 2 CPU cores"  # measured 3.5 min: base 140 s, 3 adapters 55 s
_READY_TIMEOUT_S = 120.0


async def run_demo(cache_dir: str | None = None, *, max_new_tokens: int = 24, settings=None) -> int:
    """`settings`: the adapters' LandConfig (default: the land's own fine-tune settings)."""
    import torch

    from land.artifacts import DEFAULT_CACHE_DIR, is_base_cached

    cache_dir = cache_dir or DEFAULT_CACHE_DIR
    started = time.monotonic()
    console.rule("[bold]lorastream demo — one base, many adapters, through Kafka")
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)  # on a shared small CPU a descheduled second thread stalls every op
    try:
        if not is_base_cached(cache_dir):
            console.print(f"First run: building the land's base and {len(DEMO_TASKS)} adapters, {_BUILD_ESTIMATE}; cached for later runs.")
        base_dir, adapters = await asyncio.to_thread(_build_models, Path(cache_dir), settings)
        serving_root = _serving_root(Path(cache_dir), adapters)
        built_s = time.monotonic() - started
        console.print(f"base: {_base_summary(base_dir)} [dim]({base_dir})[/]")
        console.print(
            f"adapters: {', '.join(ADAPTER_PREFIX + t for t in DEMO_TASKS)}, LoRA on the land's tasks"
            f" [dim](ready in {built_s:.0f}s)[/]"
        )
        await _serve_and_show(base_dir, serving_root, max_new_tokens)
    finally:
        torch.set_num_threads(threads_before)
    console.print(f"[dim]demo took {time.monotonic() - started:.0f}s; `lorastream land` trains and scores all six tasks[/]")
    return 0


def _build_models(cache_dir: Path, settings) -> tuple[Path, dict[str, Path]]:
    """The base and each demo adapter, from the cache or built now with a one-line progress bar."""
    from land.artifacts import TaskAdapter, land_base
    from land.land import LandConfig

    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console
    )
    with bar:
        line = None

        def on_base_step(step: int, total: int, loss: float) -> None:
            nonlocal line
            if line is None:
                line = bar.add_task("pretraining the base", total=total)
            bar.update(line, completed=step)

        base_dir = land_base(cache_dir, on_base_step)
        settings = settings or LandConfig()  # the land's fine-tune settings: the ones that work on this base
        adapters = {}
        for task in DEMO_TASKS:
            adapter = TaskAdapter(cache_dir, base_dir, task, settings)
            if not adapter.is_cached():
                line = bar.add_task(f"training {ADAPTER_PREFIX}{task}", total=adapter.steps)
                adapters[task] = adapter.build(lambda step, total, line=line: bar.update(line, completed=step, total=total))
            else:
                adapters[task] = adapter.path
    return base_dir, adapters


def _base_summary(base_dir: Path) -> str:
    import json

    try:
        num_params = json.loads((base_dir / "pretraining.json").read_text())["num_params"]
    except (OSError, ValueError, KeyError):
        return "the land's tiny Llama"
    return f"the land's {num_params / 1e6:.1f}M-parameter Llama, pretrained on generic text"


def _serving_root(cache_dir: Path, adapters: dict[str, Path]) -> Path:
    """An adapter store `<root>/land/<task>/` holding a copy of each cached adapter (a few hundred KB)."""
    import shutil

    root = cache_dir / "demo-serving"
    shutil.rmtree(root, ignore_errors=True)
    for task, path in adapters.items():
        shutil.copytree(path, root / f"{ADAPTER_PREFIX}{task}")
    return root


async def _serve_and_show(base_dir: Path, adapter_root: Path, max_new_tokens: int) -> None:
    from consumers.config import ServeConfig
    from consumers.inference import InferenceService
    from consumers.serve import build_engine_thread
    from land.tasks import builtin_task
    from streamer import KafkaConfig, LoraClient, TansuBroker, TopicNames
    from streamer.transport.kafka import KafkaTransport

    rows = [builtin_task(task).test[0] for task in DEMO_TASKS]  # the first held-out row of each task
    with TansuBroker() as broker:
        kafka = KafkaConfig(bootstrap_servers=broker.bootstrap_servers)
        topics = TopicNames("lorastream")
        runner = await asyncio.to_thread(build_engine_thread, model_path=str(base_dir), adapter_root=str(adapter_root), device="cpu")
        service = InferenceService(KafkaTransport(kafka), topics, ServeConfig(request_partitions=4), runner)
        serving = asyncio.create_task(service.run())
        try:
            await asyncio.wait_for(service.ready.wait(), _READY_TIMEOUT_S)
            console.print(
                f"embedded Tansu broker at [cyan]{broker.bootstrap_servers}[/]; one inference consumer serves the base"
                f" and {len(DEMO_TASKS)} adapters"
            )
            async with LoraClient(config=kafka, topics=topics) as client:
                await _stream_one(client, ADAPTER_PREFIX + DEMO_TASKS[-1], rows[-1].prompt, max_new_tokens)
                await _side_by_side(client, rows, max_new_tokens)
        finally:
            service.stop()
            await serving


async def _stream_one(client, adapter_id: str, prompt: str, max_new_tokens: int) -> None:
    console.print(f"\n[bold magenta]{adapter_id}[/], streamed token by token:")
    console.print(prompt, style="dim", markup=False, end="")
    async for record in client.stream(prompt, adapter_id=adapter_id, max_new_tokens=max_new_tokens):
        if isinstance(record, Final):
            console.print(
                f"\n[dim]{record.usage.completion_tokens} tokens, first after {record.timings.ttft_ms:.0f} ms,"
                f" all in {record.timings.total_ms:.0f} ms[/]"
            )
        else:
            console.print(record.text, end="", style="bold", markup=False)


async def _side_by_side(client, rows: list, max_new_tokens: int) -> None:
    """Every prompt to the base and to every adapter at once: one mixed burst through Kafka."""
    from land.metrics import answer_text

    models = [None, *(ADAPTER_PREFIX + task for task in DEMO_TASKS)]
    started = time.monotonic()
    finals = await asyncio.gather(
        *(
            client.generate(row.prompt, adapter_id=model, max_new_tokens=max_new_tokens)
            for row in rows
            for model in models
        )
    )
    elapsed_s = time.monotonic() - started
    table = Table(
        title=f"The same prompts, answered by the base and by each adapter ({len(finals)} requests in {elapsed_s:.1f}s)",
        show_lines=True,
    )
    table.add_column("prompt (its input)", max_width=34)
    for model in models:
        table.add_column(model or "base", max_width=26)
    for i, (task, row) in enumerate(zip(DEMO_TASKS, rows, strict=True)):
        answers = finals[i * len(models) : (i + 1) * len(models)]
        cells = []
        for model, final in zip(models, answers, strict=True):
            text = escape(answer_text(final.text) or "(nothing)")
            cells.append(f"[bold green]{text}[/]" if model == ADAPTER_PREFIX + task else text)
        prompt = f"{escape(_prompt_input(row.prompt))}\n[dim]expected:[/] {escape(answer_text(row.completion))}"
        table.add_row(prompt, *cells)
    console.print(table)
    console.print(
        "[dim]Greedy answers cut at their first line. Each adapter learned its task's format and labels;"
        " the base only continues text. Its own task's answer is in green.[/]"
    )


def _prompt_input(prompt: str) -> str:
    """The lines between a land prompt's instruction and its cue: `Review: …` without `### `."""
    return "\n".join(line.removeprefix("### ") for line in prompt.splitlines()[1:-1])
