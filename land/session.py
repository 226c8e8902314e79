"""An evaluation with a progress bar; `lorastream eval`'s session (client, report files); and an
in-process inference consumer evaluated through Kafka (what `lorastream land` does)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from land.evaluate import Answer, EvalConfig, evaluate, plan_requests
from land.report import eval_title, leaderboard, misses_table, save_chart, write_json
from land.results import EvalResult
from land.spec import Task
from streamer import KafkaConfig, LoraClient, TopicNames

_SERVICE_READY_TIMEOUT_S = 120.0


async def evaluate_with_progress(
    client: LoraClient,
    tasks: Sequence[Task],
    adapter_ids: dict[str, str],
    config: EvalConfig,
    console: Console,
    title: str = EvalResult.title,
) -> EvalResult:
    """`evaluate` with a bar over every request of the run (failures counted beside it)."""
    with answer_progress(console, len(plan_requests(tasks, adapter_ids, config))) as on_answer:
        return await evaluate(client, tasks, adapter_ids, config, on_answer, title)


@contextlib.contextmanager
def answer_progress(console: Console, total: int) -> Iterator[Callable[[Answer], None]]:
    """A bar over `total` answers, failures counted beside it; yields the per-answer callback."""
    bar = Progress(
        TextColumn("[bold]evaluating"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    failed = 0

    def on_answer(answer: Answer) -> None:
        nonlocal failed
        failed += answer.error is not None
        bar.update(progress_id, advance=1, failed=f"[red]{failed} failed[/]" if failed else "")

    with bar:
        progress_id = bar.add_task("eval", total=total, failed="")
        yield on_answer


async def eval_session(
    kafka: KafkaConfig,
    topics: TopicNames,
    tasks: Sequence[Task],
    adapter_ids: dict[str, str],
    config: EvalConfig,
    *,
    json_path: Path,
    plot_path: Path,
    console: Console | None = None,
) -> EvalResult:
    """Evaluate through the service at `kafka`; print the leaderboard, titled by the tasks, and a
    sample of the adapters' misses; write the JSON and the chart."""
    console = console or Console(highlight=False)
    title = eval_title([task.name for task in tasks])
    async with LoraClient(config=kafka, topics=topics, request_timeout_s=config.timeout_s) as client:
        result = await evaluate_with_progress(client, tasks, adapter_ids, config, console, title)
    console.print(leaderboard(result))
    misses = misses_table(result)
    if misses is not None:
        console.print(misses)
    write_json(json_path, result)
    save_chart(plot_path, result)
    console.print(f"mean gain [bold]{result.mean_gain_points:+.1f}[/] points; wrote {json_path} and {plot_path}")
    return result


async def serve_and_evaluate(
    kafka: KafkaConfig,
    topics: TopicNames,
    model_dir: Path,
    adapter_root: Path,
    tasks: Sequence[Task],
    adapter_ids: dict[str, str],
    config: EvalConfig,
    console: Console,
) -> EvalResult:
    """An inference consumer in this process (engine on its own thread) serving the base and every
    adapter under `adapter_root`, evaluated through Kafka, then stopped."""
    from consumers.config import ServeConfig
    from consumers.inference import InferenceService
    from streamer.transport.kafka import KafkaTransport
    from consumers.serve import build_engine_thread

    runner = await asyncio.to_thread(
        build_engine_thread, model_path=str(model_dir), adapter_root=str(adapter_root), device="cpu"
    )
    service = InferenceService(KafkaTransport(kafka), topics, ServeConfig(request_partitions=4), runner)
    serving = asyncio.create_task(service.run())
    try:
        await asyncio.wait_for(service.ready.wait(), _SERVICE_READY_TIMEOUT_S)
        console.print(f"serving the base and {len(adapter_ids)} adapters from one inference consumer")
        async with LoraClient(config=kafka, topics=topics, request_timeout_s=config.timeout_s) as client:
            return await evaluate_with_progress(client, tasks, adapter_ids, config, console)
    finally:
        service.stop()
        await serving
