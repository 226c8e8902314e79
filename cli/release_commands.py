"""`lorastream promote ADAPTER VERSION` and `lorastream rollback ADAPTER`: the release gate by hand.

Both read the adapter store (the worker's adapter root, on this host or a shared volume), record
the release there, and announce the version on the adapters topic as a new registry revision, so
every inference consumer switches to it. Writing the adapters topic is the training worker's
right; run these as a release operator, a principal made with
`python -m streamer.acls --release-operator NAME` (docs/training.md, "Release gate").
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from rich.markup import escape

from cli.commands import console, kafka_config, run_async
from schemas import AdapterEvent, encode
from schemas.training import ReleaseScores
from streamer import TopicNames, retry_transient, start_producer


def add_release_parsers(
    subparsers: argparse._SubParsersAction, kafka_options: Callable[[argparse.ArgumentParser], None]
) -> None:
    promote = subparsers.add_parser(
        "promote",
        help="release a kept adapter version by hand",
        description="Serve VERSION of ADAPTER (installed, e.g. kept by the release gate): record it released in "
        "the adapter store and announce it on the adapters topic as a new registry revision.",
    )
    promote.add_argument("adapter", help="adapter id, e.g. acme/sql")
    promote.add_argument("version", type=int, help="an installed version (see the job's completed event)")
    _store_option(promote)
    kafka_options(promote)
    promote.set_defaults(handler=cmd_promote)

    rollback = subparsers.add_parser(
        "rollback",
        help="serve the previously released adapter version again",
        description="Return ADAPTER to the version released before the current one: a new registry revision "
        "that names the older version, so consumers that refuse older versions still follow it.",
    )
    rollback.add_argument("adapter", help="adapter id, e.g. acme/sql")
    _store_option(rollback)
    kafka_options(rollback)
    rollback.set_defaults(handler=cmd_rollback)


def _store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--adapters", default=os.environ.get("LORASTREAM_ADAPTER_ROOT"), required="LORASTREAM_ADAPTER_ROOT" not in os.environ,
        help="the training worker's adapter root (env LORASTREAM_ADAPTER_ROOT)",
    )


def cmd_promote(args: argparse.Namespace) -> int:
    from consumers.training.adapter_release import promote

    return _announce(args, lambda root: promote(root, args.adapter, args.version))


def cmd_rollback(args: argparse.Namespace) -> int:
    from consumers.training.adapter_release import rollback

    return _announce(args, lambda root: rollback(root, args.adapter))


def _announce(args: argparse.Namespace, release: Callable[[str], AdapterEvent]) -> int:
    from gpu_engine.training.adapter_store import AdapterStoreError

    try:
        event = release(os.path.abspath(args.adapters))
    except AdapterStoreError as exc:
        console.print(f"[red]refused[/] {escape(str(exc))}")
        return 1

    async def send() -> None:
        producer = await start_producer(kafka_config(args))
        try:
            topic = TopicNames(args.topic_prefix).adapters
            await retry_transient(
                lambda: producer.send_and_wait(topic, encode(event), key=event.adapter_id.encode()),
                what=f"publish to {topic}",
            )
        finally:
            await producer.stop()

    run_async(send())
    console.print(
        f"[green]announced[/] {event.adapter_id} version {event.version} (revision {event.revision})"
        + (f"\n{escape(release_summary(event.release))}" if event.release is not None else "")
    )
    return 0


def release_summary(scores: ReleaseScores) -> str:
    """An evaluation and its decision in one line: `kept: beat_base by 5 on sentiment (accuracy, 100 rows):
    candidate 61.0, base 55.0`."""
    margin = f" by {scores.margin_points:g}" if scores.margin_points else ""
    on = f" on {scores.task} ({scores.metric}, {scores.num_examples} rows)" if scores.task else ""
    numbers = [f"{name} {value:.1f}" for name, value in
               (("candidate", scores.candidate), ("base", scores.base), ("served", scores.served)) if value is not None]
    served = f" (served version {scores.served_version})" if scores.served_version is not None else ""
    return f"{scores.decision.value}: {scores.rule.value}{margin}{on}: {', '.join(numbers)}{served}"
