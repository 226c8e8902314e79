"""`lorastream train` (submit a fine-tune, follow it with a progress bar) and `lorastream train-worker`.

`add_train_parsers(subparsers, kafka_options)` registers both; each parser sets `handler` to its
command function.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Callable

import msgspec

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Column

from cli.commands import console, kafka_config, run_async
from cli.release_commands import release_summary
from gpu_engine.training.dataset import MAX_DATASET_ROWS
from gpu_engine.training.dataset_source import MAX_DATASET_BYTES
from schemas import DatasetRef, InvalidEvent, JobState, TrainingEvent
from schemas.training import EvalMetric, Evaluation, Release, ReleaseDecision, ReleaseRule
from streamer import TopicNames
from streamer.training_client import TERMINAL_STATES, TrainingJob, build_training_request, submit_training

# hyperparameter flags: (flag, type, choices, help); "by base size": the worker chooses an unset one
# from its base's parameter count (docs/training.md, "Defaults by base size")
_HYPERPARAMETERS = (
    ("--r", int, None, "LoRA rank (default by base size: 8 for >= 1B parameters, 16 below)"),
    ("--alpha", float, None, "LoRA alpha (default: twice the rank)"),
    ("--dropout", float, None, "LoRA dropout (default 0.05)"),
    ("--learning-rate", float, None, "peak learning rate (default by base size: 2e-4 for >= 1B, up to 5e-3 for tiny bases)"),
    ("--lr-scheduler", str, ("cosine", "linear", "constant"), "learning-rate schedule after warmup (default cosine)"),
    ("--warmup-ratio", float, None, "share of steps warming up (default 0.03)"),
    ("--effective-batch-size", int, None, "rows per optimizer step (default 16)"),
    ("--micro-batch-size", int, None, "rows per forward pass; the rest is accumulated (default 4)"),
    ("--max-steps", int, None, "optimizer steps (wins over --epochs)"),
    ("--epochs", float, None, "passes over the data (default 1, with a floor of steps on bases under 1B)"),
    ("--max-seq-len", int, None, "tokens per row, prompt + completion (default 512; clamped to the base's positions)"),
    ("--seed", int, None, "seed of LoRA init, data order and dropout (default 0)"),
    ("--quantize", str, ("auto", "nf4", "none"), "auto = NF4 on CUDA, the plain base elsewhere (default auto)"),
)


def add_train_parsers(
    subparsers: argparse._SubParsersAction, kafka_options: Callable[[argparse.ArgumentParser], None]
) -> None:
    train = subparsers.add_parser(
        "train",
        help="submit a LoRA fine-tune and follow its progress",
        description="Publish a TrainingRequest and follow it until it ends: a progress bar on a terminal, one "
        "line per event otherwise. Settings left unset are chosen by the worker from its base's size.",
    )
    train.add_argument("--adapter", required=True, help="id of the new adapter, e.g. acme/sql")
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--dataset",
        help="JSONL with prompt/completion fields: a path the worker can read, or file:// URI",
    )
    source.add_argument("--task", help="a built-in task the worker generates (see `lorastream eval --help`)")
    train.add_argument("--prompt-field", default="prompt")
    train.add_argument("--completion-field", default="completion")
    train.add_argument("--job-id", default=None, help="default: a fresh uuid")
    train.add_argument(
        "--base-model", default=None,
        help="base name (default: the worker's); the job goes to that base's training lane when one exists",
    )
    train.add_argument(
        "--targets", default=None,
        help="comma-separated projections (default by base size: q_proj,v_proj for >= 1B parameters, all below)",
    )
    for flag, kind, choices, text in _HYPERPARAMETERS:
        train.add_argument(flag, type=kind, choices=choices, default=None, help=text)
    train.add_argument("--overwrite", action="store_true", help="replace an existing adapter with this id")
    _release_options(train)
    train.add_argument("--detach", action="store_true", help="print the job id and return without following")
    train.add_argument("--idle-timeout-s", type=float, default=None, help="give up when no event comes this long")
    kafka_options(train)
    train.set_defaults(handler=cmd_train)

    worker = subparsers.add_parser(
        "train-worker",
        help="run a training worker",
        description="Join the training consumer group; run each TrainingRequest as a fine-tune in its own process.",
    )
    worker.add_argument("--model", required=True, help="local Hugging Face directory of the base model")
    worker.add_argument("--adapters", required=True, help="adapter root: trained adapters go to <dir>/<adapter_id>/")
    worker.add_argument(
        "--work-dir", default="train-work", help="job specs, checkpoints and logs (default %(default)s)"
    )
    worker.add_argument(
        "--base-name", default=None, help="name requests use for the base (default: the model dir's name)"
    )
    worker.add_argument(
        "--publish-uri", default=os.environ.get("LORASTREAM_PUBLISH_URI"),
        help="also upload each adapter to s3://bucket/prefix/<adapter_id>/v<version> and announce that uri, "
        "so consumers on other hosts can fetch it (env LORASTREAM_PUBLISH_URI)",
    )
    worker.add_argument("--s3-endpoint-url", default=os.environ.get("LORASTREAM_S3_ENDPOINT_URL"), help="S3-compatible endpoint (MinIO)")
    worker.add_argument(
        "--dataset-root", action="append", dest="dataset_roots", metavar="DIR_OR_S3_PREFIX",
        help="a directory or s3://bucket/prefix/ that request datasets may come from; repeatable. Without "
        "any, only built-in tasks are trained (env LORASTREAM_DATASET_ROOTS, comma-separated)",
    )
    worker.add_argument(
        "--max-dataset-bytes", type=int, default=MAX_DATASET_BYTES,
        help="larger datasets are refused (default %(default)s)",
    )
    worker.add_argument(
        "--max-dataset-rows", type=int, default=MAX_DATASET_ROWS,
        help="datasets with more rows are refused (default %(default)s)",
    )
    worker.add_argument("--group-id", default="lorastream-training")
    worker.add_argument(
        "--base-lane", action="store_true",
        help="read this base's own training lane <prefix>.training.requests.base.<base name> in group "
        "<group id>.<base name>, not the shared topic (needs a topic-safe --base-name)",
    )
    worker.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    worker.add_argument("--threads", type=int, default=None, help="torch threads per job (default: one per core)")
    worker.add_argument("--checkpoint-every-steps", type=int, default=50)
    worker.add_argument(
        "--progress-interval-s", type=float, default=2.0, help="at most one progress event per interval"
    )
    worker.add_argument("--training-partitions", type=int, default=2)
    kafka_options(worker)
    worker.set_defaults(handler=cmd_train_worker)


def _release_options(train: argparse.ArgumentParser) -> None:
    gate = train.add_argument_group("release gate (docs/training.md): announce the adapter only if it earns it")
    on = gate.add_mutually_exclusive_group()
    on.add_argument("--eval-task", default=None, help="evaluate on a built-in task's test split, with its metric")
    on.add_argument("--eval-file", default=None, help="evaluate on a JSONL test file (prompt/completion) the worker can read")
    on.add_argument("--eval-held-out", action="store_true", help="evaluate on the job's own held-out split")
    gate.add_argument("--eval-metric", default=None, choices=[m.value for m in EvalMetric], help="for --eval-file and --eval-held-out (default rouge_l)")
    gate.add_argument("--eval-max-examples", type=int, default=None, help="rows scored at most (default 100)")
    gate.add_argument("--release", default=None, choices=[r.value for r in ReleaseRule], help="release rule (default always)")
    gate.add_argument("--margin", type=float, default=None, help="points the adapter must win by (default 0)")


def release_request(args: argparse.Namespace) -> dict:
    """The `evaluation` and `release` of a TrainingRequest from the release-gate flags."""
    fields = {}
    if args.eval_task or args.eval_file or args.eval_held_out:
        uri = args.eval_file if args.eval_file is None or "://" in args.eval_file else os.path.abspath(args.eval_file)
        given = dict(task=args.eval_task, test_uri=uri, held_out=args.eval_held_out or False,
                     metric=args.eval_metric, max_examples=args.eval_max_examples)
        fields["evaluation"] = msgspec.convert({k: v for k, v in given.items() if v is not None}, Evaluation)
    rule = dict(rule=args.release, margin_points=args.margin)
    fields["release"] = msgspec.convert({k: v for k, v in rule.items() if v is not None}, Release)
    return fields


def cmd_train(args: argparse.Namespace) -> int:
    names = [flag[2:].replace("-", "_") for flag, *_ in _HYPERPARAMETERS]
    hyperparameters = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if args.targets:
        hyperparameters["target_modules"] = [t.strip() for t in args.targets.split(",") if t.strip()]
    if args.task is not None:
        dataset = DatasetRef(task=args.task)
    else:
        uri = args.dataset if "://" in args.dataset else os.path.abspath(args.dataset)  # the worker reads it
        dataset = DatasetRef(uri=uri, prompt_field=args.prompt_field, completion_field=args.completion_field)
    try:
        request = build_training_request(
            args.adapter,
            dataset,
            job_id=args.job_id,
            base_model=args.base_model,
            overwrite=args.overwrite,
            **release_request(args),
            **hyperparameters,
        )
    except (InvalidEvent, msgspec.ValidationError) as exc:
        console.print(f"[red]invalid request[/] {escape(str(exc))}")
        return 2

    async def submit_and_follow() -> int:
        job = await submit_training(kafka_config(args), TopicNames(args.topic_prefix), request)
        async with job:
            console.print(
                f"submitted job [cyan]{job.job_id}[/] for adapter [cyan]{request.adapter_id}[/] to {job.requests_topic}"
            )
            if args.detach:
                return 0
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(
                signal.SIGINT, lambda: asyncio.ensure_future(job.cancel())
            )  # Ctrl-C: cancel, see it end
            try:
                label = f"{request.adapter_id} (job {job.job_id[:8]})"
                return await follow_job(job, idle_timeout_s=args.idle_timeout_s, label=label)
            finally:
                loop.remove_signal_handler(signal.SIGINT)

    return run_async(submit_and_follow())


async def follow_job(
    job: TrainingJob, *, idle_timeout_s: float | None = None, out: Console = console, label: str | None = None
) -> int:
    """Show a job's events on `out` until it ends; 0 when it completed. On a terminal: a progress bar
    labelled `label` (default: the job id) with the job's own ETA; elsewhere (piped, a log file): one
    line per event."""
    view = JobProgress(out, label or job.job_id)
    with view:
        async for event in job.events(idle_timeout_s=idle_timeout_s):
            view.show(event)
    return _print_outcome(job.last_event, out)


class JobProgress:
    """A job's events as a bar (`out.is_terminal`) or as lines; `with` it around the events."""

    def __init__(self, out: Console, label: str) -> None:
        self.out, self.label = out, label
        self.bar: Progress | None = None
        if out.is_terminal:
            self.bar = Progress(
                TextColumn("[bold]{task.description}", table_column=Column(no_wrap=True)),
                BarColumn(bar_width=24),
                MofNCompleteColumn(table_column=Column(no_wrap=True, min_width=11)),
                TextColumn("{task.fields[eta]}", table_column=Column(no_wrap=True)),
                TextColumn("{task.fields[stats]}", table_column=Column(no_wrap=True, overflow="ellipsis")),
                console=out,
            )
            self.task = self.bar.add_task(f"{label} queued", total=None, eta="", stats="")

    def __enter__(self) -> JobProgress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def show(self, event: TrainingEvent) -> None:
        if event.notice and event.state in (JobState.STARTED, JobState.PROGRESS):
            self.out.print(f"[dim]{escape(event.notice)}[/]", soft_wrap=True)
        if self.bar is None:
            if event.state not in TERMINAL_STATES:  # the outcome is printed once it is known
                self.out.print(escape(progress_line(self.label, event)), highlight=False, soft_wrap=True)
            return
        if event.state is JobState.STARTED:
            nf4 = " (nf4 base)" if event.quantization == "nf4" else ""
            self.bar.update(self.task, description=f"{self.label}{nf4}", total=event.total_steps)
        if event.step is not None and event.state is not JobState.QUEUED:
            eta = f"eta {_duration(event.eta_s)}" if event.eta_s is not None else ""
            stats = _stats(event)
            self.bar.update(self.task, completed=event.step, eta=eta, **({"stats": stats} if stats else {}))


def progress_line(label: str, event: TrainingEvent) -> str:
    """One event as one line: `acme/sql progress 25/3000 eta 4m10s loss 1.2345 lr 2.00e-04`."""
    parts = [label, event.state.value]
    if event.step is not None:
        parts.append(f"{event.step}/{event.total_steps}" if event.total_steps is not None else str(event.step))
    elif event.total_steps is not None:
        parts.append(f"0/{event.total_steps}")
    if event.eta_s is not None:
        parts.append(f"eta {_duration(event.eta_s)}")
    stats = _stats(event)
    return " ".join(parts + ([stats] if stats else []))


def _stats(event: TrainingEvent) -> str:
    stats = []
    if event.loss is not None:
        stats.append(f"loss {event.loss:.4f}")
    if event.eval_loss is not None:
        stats.append(f"eval {event.eval_loss:.4f}")
    if event.learning_rate is not None:
        stats.append(f"lr {event.learning_rate:.2e}")
    if event.tokens_per_s is not None:
        stats.append(f"{event.tokens_per_s:,.0f} tok/s")
    return "  ".join(stats)


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _print_outcome(event: TrainingEvent | None, out: Console) -> int:
    if event is None:
        return 1
    if event.state is JobState.COMPLETED:
        version = f" version {event.adapter_version}" if event.adapter_version is not None else ""
        out.print(f"[green]completed[/] {event.adapter_id}{version} → {event.adapter_uri}\n[dim]sha256 {event.checksum}[/]")
        if event.release is not None:
            colour = "green" if event.release.decision is ReleaseDecision.RELEASED else "yellow"
            out.print(f"[{colour}]{escape(release_summary(event.release))}[/]", soft_wrap=True)
            if event.release.decision is ReleaseDecision.KEPT:
                out.print(f"[dim]not served; `lorastream promote {event.adapter_id} {event.adapter_version}` serves it[/]")
        return 0
    code = event.code.value if event.code is not None else event.state.value
    out.print(f"[red]{event.state.value}[/] ({code}) {escape(event.reason or '')}")
    return 1


def dataset_roots(flags: list[str] | None, env: str | None) -> tuple[str, ...]:
    """The --dataset-root flags, else the comma-separated env value; local roots made absolute."""
    roots = flags if flags else [r.strip() for r in (env or "").split(",") if r.strip()]
    return tuple(r if r.startswith("s3://") else os.path.abspath(r) for r in roots)


def cmd_train_worker(args: argparse.Namespace) -> int:
    from consumers.training.worker import TrainingWorker
    from streamer.transport.kafka import KafkaTransport

    try:
        config = _worker_config(args)
        topics = TopicNames(args.topic_prefix)
        config.requests_topic(topics)  # a lane is named by its base: checked before anything starts
    except ValueError as exc:
        console.print(f"[red]error[/] {escape(str(exc))}")
        return 2
    from cli.train_eval_sets import land_eval_sets
    from land import builtin_train_file

    worker = TrainingWorker(
        KafkaTransport(kafka_config(args)), topics, config,
        builtin_tasks=builtin_train_file, eval_sets=land_eval_sets,
    )

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, worker.stop)
        console.print(
            f"[bold]training worker[/] for base [cyan]{config.base_name}[/] reading {config.requests_topic(topics)}"
            f" (group {config.consumer_group}); Ctrl-C stops it"
        )
        await worker.run()

    run_async(serve())
    return 0


def _worker_config(args: argparse.Namespace):  # -> TrainWorkerConfig (imported late: torch-free start-up)
    """The worker's config from its flags. Raises ValueError."""
    from consumers.training.config import TrainWorkerConfig

    return TrainWorkerConfig(
        base_model_path=os.path.abspath(args.model),
        adapter_root=os.path.abspath(args.adapters),
        work_dir=os.path.abspath(args.work_dir),
        base_model_name=args.base_name,
        group_id=args.group_id,
        device=args.device,
        job_threads=args.threads,
        checkpoint_every_steps=args.checkpoint_every_steps,
        progress_interval_s=args.progress_interval_s,
        training_partitions=args.training_partitions,
        publish_uri=args.publish_uri,
        s3_endpoint_url=args.s3_endpoint_url,
        dataset_roots=dataset_roots(args.dataset_roots, os.environ.get("LORASTREAM_DATASET_ROOTS")),
        max_dataset_bytes=args.max_dataset_bytes,
        max_dataset_rows=args.max_dataset_rows,
        base_lane=args.base_lane,
    )
