"""`lorastream ls`: the served bases and the registered adapters, live or not (streamer.model_listing).

`add_catalogue_parsers(subparsers, kafka_options)` registers it; the parser sets `handler`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from rich.markup import escape
from rich.table import Table

from cli.commands import console, kafka_config, run_async
from streamer import TopicNames
from streamer.catalogue import BaseListing
from streamer.model_listing import AdapterListing


def add_catalogue_parsers(
    subparsers: argparse._SubParsersAction, kafka_options: Callable[[argparse.ArgumentParser], None]
) -> None:
    ls = subparsers.add_parser(
        "ls",
        help="list the bases and adapters that can be asked for, and which are live",
        description="Every base an inference consumer announced in the catalogue or an adapter names, and every"
        " registered adapter. Live: a consumer of that base announced itself recently. Tier: where a live"
        " consumer holds the adapter's weights (device, host), when known.",
    )
    ls.add_argument("--base", default=None, help="only the adapters of this base")
    kafka_options(ls)
    ls.set_defaults(handler=cmd_ls)


def cmd_ls(args: argparse.Namespace) -> int:
    from streamer import LoraClient

    async def listing() -> tuple[list[BaseListing], list[AdapterListing]]:
        async with LoraClient(config=kafka_config(args), topics=TopicNames(args.topic_prefix)) as client:
            return await client.models(), await client.adapters(base=args.base)

    bases, adapters = run_async(listing())
    console.print(bases_table(bases if args.base is None else [b for b in bases if b.base == args.base]))
    console.print(adapters_table(adapters))
    return 0


def _live(is_live: bool) -> str:
    return "[green]live[/]" if is_live else "[dim]not live[/]"


def bases_table(bases: list[BaseListing]) -> Table:
    table = Table(title="bases", title_justify="left")
    for column in ("base", "state", "consumers", "architecture", "quantization", "max len", "requests topic", "group"):
        table.add_column(column)
    for listing in bases:
        first = listing.consumers[0] if listing.consumers else None  # live consumers come first
        table.add_row(
            escape(listing.base),
            _live(listing.is_live),
            str(len(listing.consumers)),
            escape(first.architecture or "-") if first else "-",
            escape(first.quantization or "none") if first else "-",
            str(first.max_model_len or "-") if first else "-",
            escape(first.requests_topic) if first else "-",
            escape(first.group_id) if first else "-",
        )
    return table


def adapters_table(adapters: list[AdapterListing]) -> Table:
    table = Table(title="adapters", title_justify="left")
    for column in ("adapter", "version", "base", "state", "tier"):
        table.add_column(column)
    for adapter in adapters:
        table.add_row(
            escape(adapter.adapter_id),
            str(adapter.version),
            escape(adapter.base or "(default)"),
            _live(adapter.is_live),
            adapter.tier.value if adapter.tier is not None else "-",
        )
    return table
