"""`lorastream eval` and `lorastream land`.

`add_land_parsers(subparsers, kafka_options)` registers both; each parser sets `handler` to its
command function (`args.handler(args)` returns the exit code).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from rich.markup import escape

from land.spec import LandError
from land.tasks import BUILTIN_TASKS

DEFAULT_ADAPTER_PREFIX = "land/"


def add_land_parsers(
    subparsers: argparse._SubParsersAction, kafka_options: Callable[[argparse.ArgumentParser], None]
) -> None:
    evaluate = subparsers.add_parser(
        "eval",
        help="score the base and each task's adapter through Kafka",
        description="Send every test prompt of the tasks to the base model and to each task's adapter in one "
        "mixed concurrent run through Kafka; print a leaderboard, write JSON and a bar chart.",
    )
    evaluate.add_argument(
        "--task",
        action="append",
        dest="tasks",
        metavar="NAME|FILE",
        help=f"a built-in task ({', '.join(BUILTIN_TASKS)}) or a task JSON file; repeatable (default: all built-ins)",
    )
    evaluate.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="TASK=ID",
        help="the adapter of a task (default: <adapter-prefix><task>)",
    )
    evaluate.add_argument("--adapter-prefix", default=DEFAULT_ADAPTER_PREFIX, help="(default %(default)s)")
    evaluate.add_argument("--max-rows", type=int, default=None, help="test rows per task (default: all)")
    evaluate.add_argument("--max-inflight", type=int, default=256, help="concurrent requests (default %(default)s)")
    evaluate.add_argument("--timeout-s", type=float, default=300.0, help="per request, between records")
    evaluate.add_argument("--json", default="eval.json", metavar="FILE", help="(default %(default)s)")
    evaluate.add_argument("--plot", default="eval.png", metavar="FILE", help="(default %(default)s)")
    kafka_options(evaluate)
    evaluate.set_defaults(handler=cmd_eval)

    land = subparsers.add_parser(
        "land",
        help="the whole story on the embedded broker: pretrain, fine-tune by events, evaluate",
        description="Build (once) the land's tiny pretrained bases (a Llama and a Qwen2) and a larger few-shot "
        "base, fine-tune one LoRA adapter per base and task through training events on the embedded Tansu "
        "broker, serve every base at once (each by its own consumer in its own lane) and evaluate them all "
        "through Kafka in one mixed run; print the bases × tasks matrix and write docs/land.md and "
        "docs/bench/land.json|png.",
    )
    land.add_argument(
        "--task", action="append", dest="tasks", metavar="NAME", help="built-in task; repeatable (default: all)"
    )
    land.add_argument("--workdir", default=".cache/land", help="base cache and run files (default %(default)s)")
    land.add_argument("--docs", default="docs", help="where land.md and bench/land.json|png go (default %(default)s)")
    land.add_argument("--max-rows", type=int, default=None, help="test rows per task (default: all)")
    land.add_argument("--workers", type=int, default=2, help="training workers, one job each at a time (default 2)")
    land.add_argument("--steps", type=int, default=None, help="optimizer steps per adapter (default: the land's)")
    land.add_argument(
        "--max-shots", type=int, default=None, help="examples in a few-shot prompt, fewer where they do not fit "
        "(default: the land's)"
    )
    land.add_argument("--no-fewshot", action="store_true", help="leave out the larger few-shot base")
    land.add_argument(
        "--quick", action="store_true", help="a smoke run: one base, no few-shot base, 3 tasks, few steps, 20 rows; no docs"
    )
    land.add_argument(
        "--base-only",
        action="store_true",
        help="only build (once, ~2 minutes) the land's first pretrained base (the Llama) and print its folder on stdout, for "
        "`lorastream serve --model` and `train-worker --model`; with --quick, the quick run's smaller base",
    )
    land.set_defaults(handler=cmd_land)


def cmd_eval(args: argparse.Namespace) -> int:
    from cli.commands import console, kafka_config, run_async
    from land.evaluate import EvalConfig
    from land.session import eval_session
    from land.tasks import load_task
    from streamer import TopicNames

    try:
        tasks = [load_task(ref) for ref in (args.tasks or BUILTIN_TASKS)]
        config = EvalConfig(max_test_rows=args.max_rows, max_inflight=args.max_inflight, timeout_s=args.timeout_s)
    except (LandError, ValueError) as exc:
        console.print(f"[red]{escape(str(exc))}[/]")
        return 2
    adapter_ids = {task.name: f"{args.adapter_prefix}{task.name}" for task in tasks}
    for pair in args.adapter:
        task_name, sep, adapter_id = pair.partition("=")
        if not sep or task_name not in adapter_ids:
            console.print(f"[red]--adapter {escape(pair)}[/]: expected TASK=ID for one of {sorted(adapter_ids)}")
            return 2
        adapter_ids[task_name] = adapter_id
    result = run_async(
        eval_session(
            kafka_config(args),
            TopicNames(args.topic_prefix),
            tasks,
            adapter_ids,
            config,
            json_path=Path(args.json),
            plot_path=Path(args.plot),
            console=console,
        )
    )
    return 0 if not any(t.num_failed_adapter + t.num_failed_base for t in result.tasks) else 1


def cmd_land(args: argparse.Namespace) -> int:
    from cli.commands import console, run_async
    from land.land import LandConfig, quick_config, run_land

    overrides = {"tasks": tuple(args.tasks)} if args.tasks else {}
    if args.max_rows is not None:
        overrides["max_test_rows"] = args.max_rows
    if args.steps is not None:
        overrides["steps"] = args.steps
    if args.max_shots is not None:
        overrides["max_shots"] = args.max_shots
    if args.no_fewshot:
        overrides["fewshot_base"] = None
    try:
        config = quick_config(args.workdir) if args.quick else LandConfig(workdir=args.workdir, docs_dir=args.docs)
        config = config.replace(num_workers=args.workers, **overrides)
    except ValueError as exc:
        console.print(f"[red]{escape(str(exc))}[/]")
        return 2
    if args.base_only:
        return print_base(config)
    try:
        run_async(run_land(config, console))
    except LandError as exc:
        console.print(f"[red]land failed:[/] {escape(str(exc))}")
        return 1
    return 0


def print_base(config) -> int:
    """The land's cached base folder on stdout (progress, when it is built, on stderr)."""
    import torch
    from rich.console import Console

    from land.bases import base_with_progress

    torch.set_num_threads(config.torch_threads)  # as the land run: one thread pretrains fastest here
    path = base_with_progress(Path(config.workdir).resolve(), config.base, Console(stderr=True, highlight=False))
    print(path)
    return 0
