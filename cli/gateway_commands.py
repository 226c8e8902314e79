"""`lorastream gateway`: the OpenAI-compatible HTTP gateway in front of the Kafka fleet (docs/gateway.md).

`add_gateway_parsers(subparsers, kafka_options)` registers it; the parser sets `handler`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from cli.commands import field_default, kafka_config, run_async
from gateway.config import DEFAULT_BASE_NAME, GatewayConfig, parse_api_keys
from streamer import TopicNames


def add_gateway_parsers(
    subparsers: argparse._SubParsersAction, kafka_options: Callable[[argparse.ArgumentParser], None]
) -> None:
    gateway = subparsers.add_parser(
        "gateway",
        help="serve the OpenAI HTTP API (completions, chat completions, models) in front of the fleet",
        description="An OpenAI-compatible HTTP server: each request becomes an InferenceRequest on Kafka;"
        " `model` is the base's name or an adapter id. /healthz, /readyz and /metrics on the same port.",
    )
    gateway.add_argument("--host", default=os.environ.get("LORASTREAM_GATEWAY_HOST", field_default(GatewayConfig, "host")),
                         help="address to listen on (env LORASTREAM_GATEWAY_HOST; default %(default)s)")
    gateway.add_argument("--port", type=int, default=field_default(GatewayConfig, "port"), help="(default %(default)s)")
    gateway.add_argument(
        "--base-name", default=os.environ.get("LORASTREAM_BASE_NAME", DEFAULT_BASE_NAME),
        help="the `model` name of the base (`base` always names it too; env LORASTREAM_BASE_NAME; default %(default)s)",
    )
    keys = gateway.add_argument_group("API keys (none given: no key is needed)")
    keys.add_argument("--api-key", action="append", default=[], metavar="KEY[:TENANT]",
                      help="an accepted key and the tenant it stands for; repeatable (prefer the file: argv is visible)")
    keys.add_argument("--api-keys-file", default=os.environ.get("LORASTREAM_API_KEYS_FILE"), metavar="FILE",
                      help="one `KEY [TENANT]` per line, # comments (env LORASTREAM_API_KEYS_FILE)")
    gateway.add_argument("--default-max-tokens", type=int, default=field_default(GatewayConfig, "default_max_tokens"),
                         help="when a request sets no max_tokens (default %(default)s)")
    gateway.add_argument("--request-timeout-s", type=float, default=field_default(GatewayConfig, "request_timeout_s"),
                         help="longest wait for the next answer record; then 504 (default %(default)s)")
    gateway.add_argument(
        "--kafka-tenant", default=os.environ.get("LORASTREAM_KAFKA_TENANT"),
        help="the Kafka tenant (SASL user) it connects as: its reply topic goes under that tenant's prefix"
        " (env LORASTREAM_KAFKA_TENANT; see docs/security.md)",
    )
    kafka_options(gateway)
    gateway.set_defaults(handler=cmd_gateway)


def gateway_config(args: argparse.Namespace) -> GatewayConfig:
    entries = [entry.replace(":", " ", 1) for entry in args.api_key]
    if args.api_keys_file:
        entries += Path(args.api_keys_file).read_text(encoding="utf-8").splitlines()
    return GatewayConfig(
        host=args.host,
        port=args.port,
        base_name=args.base_name,
        api_keys=parse_api_keys(entries),
        default_max_tokens=args.default_max_tokens,
        request_timeout_s=args.request_timeout_s,
        kafka_tenant=args.kafka_tenant,
    )


def cmd_gateway(args: argparse.Namespace) -> int:
    from gateway import serve

    run_async(serve(gateway_config(args), kafka_config(args), TopicNames(args.topic_prefix)))
    return 0
