"""`python -m land eval|land …`: the land commands before (or without) the `lorastream` CLI."""

from __future__ import annotations

import argparse
import sys

from cli.main import kafka_options
from land.commands import add_land_parsers
from cli.logs import configure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m land", description=__doc__)
    parser.add_argument("--log-level", default="WARNING")
    add_land_parsers(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"), kafka_options)
    args = parser.parse_args(argv)
    configure(args.log_level)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
