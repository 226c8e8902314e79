"""`lorastream` — the command line: serve, broker, topics, send, tail, demo, bench, train, eval, land."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from cli.logs import LOG_FORMAT_ENV, LOG_FORMATS, configure, quiet_libraries
from streamer.config import DEFAULT_FETCH_MAX_WAIT_MS
from streamer.reply_topic_gc import DEFAULT_IDLE_S, HEARTBEAT_INTERVAL_S

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
SERVICE_COMMANDS = ("serve", "broker", "train-worker", "gateway")  # log INFO by default; the others print their own story
# benchmark name → module with main(argv) -> int
BENCHMARKS = {
    "engine": "bench.engine", "cache": "bench.cache", "kafka": "bench.kafka", "train": "bench.train",
    "gpu": "bench.gpu", "gateway": "bench.gateway",
    "fleet": "bench.fleet",
    "all": "bench.report",
}


def kafka_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Kafka connection")
    group.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("LORASTREAM_BOOTSTRAP", DEFAULT_BOOTSTRAP),
        help="host:port[,host:port] (env LORASTREAM_BOOTSTRAP; default %(default)s)",
    )
    group.add_argument(
        "--topic-prefix",
        default=os.environ.get("LORASTREAM_TOPIC_PREFIX", "lorastream"),
        help="prefix of every topic name (env LORASTREAM_TOPIC_PREFIX; default %(default)s)",
    )
    env = os.environ.get
    group.add_argument(
        "--security-protocol", default=env("LORASTREAM_SECURITY_PROTOCOL"),
        help="PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL (env LORASTREAM_SECURITY_PROTOCOL)",
    )
    group.add_argument(
        "--sasl-mechanism", default=env("LORASTREAM_SASL_MECHANISM"),
        help="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (env LORASTREAM_SASL_MECHANISM)",
    )
    group.add_argument("--sasl-username", default=env("LORASTREAM_SASL_USERNAME"), help="(env LORASTREAM_SASL_USERNAME)")
    group.add_argument("--sasl-password", default=None, help="(or env LORASTREAM_SASL_PASSWORD)")
    group.add_argument("--ssl-cafile", default=env("LORASTREAM_SSL_CAFILE"), help="(env LORASTREAM_SSL_CAFILE)")
    group.add_argument(
        "--fetch-max-wait-ms",
        type=int,
        default=int(os.environ.get("LORASTREAM_FETCH_MAX_WAIT_MS") or DEFAULT_FETCH_MAX_WAIT_MS),
        help="longest a consumer fetch waits for data (env LORASTREAM_FETCH_MAX_WAIT_MS; default %(default)s;"
        " 500 suits Apache Kafka, which answers as soon as data arrives; keep it low on Tansu)",
    )


def _send_options(parser: argparse.ArgumentParser) -> None:
    from schemas import SamplingParams
    from streamer.client import DEFAULT_REQUEST_TIMEOUT_S

    defaults = SamplingParams()  # the wire format's defaults, defined there once
    parser.add_argument("prompt", nargs="?", default=None, help="the prompt (or use --prompt-file)")
    parser.add_argument("--prompt-file", default=None, metavar="FILE", help="read the prompt from FILE ('-': standard input)")
    parser.add_argument("--escapes", action="store_true", help=r"interpret \n, \t, \r and \\ in the prompt argument")
    parser.add_argument("--chat", action="store_true", help="send the prompt as one user message, rendered with the model's chat template")
    parser.add_argument("--system", default=None, metavar="TEXT", help="with --chat: a system message before it")
    parser.add_argument("--adapter", default=None, help="adapter id (default: the base model)")
    parser.add_argument("--base", default=None, help="base model name, as `lorastream ls` lists it (default: the deployment's)")
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens, help="(default %(default)s)")
    parser.add_argument("--ignore-eos", action="store_true", help="keep generating past end-of-sequence tokens (fixed-length answers)")
    parser.add_argument("--temperature", type=float, default=defaults.temperature, help="0 = greedy (default %(default)s)")
    parser.add_argument("--top-p", type=float, default=defaults.top_p, help="(default %(default)s)")
    parser.add_argument("--top-k", type=int, default=defaults.top_k, help="0 = off (default %(default)s)")
    parser.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--timeout-s", type=float, default=None, help=f"how long to wait for the answer (default {DEFAULT_REQUEST_TIMEOUT_S:g})"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lorastream",
        description="Kafka-native multi-LoRA serving: many fine-tunes of one base model, via events.",
    )
    parser.add_argument(
        "--log-level", default=os.environ.get("LORASTREAM_LOG_LEVEL"),
        help="(env LORASTREAM_LOG_LEVEL; default INFO for serve, broker and train-worker, WARNING for the rest)",
    )
    parser.add_argument(
        "--log-format", choices=LOG_FORMATS, default=os.environ.get(LOG_FORMAT_ENV, "auto"),
        help=f"log lines on stderr (env {LOG_FORMAT_ENV}; default auto: text on a terminal, JSON otherwise)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run an inference consumer", description="Join the inference consumer group and answer requests.")
    serve.add_argument("--model", required=True, help="local Hugging Face model directory")
    serve.add_argument(
        "--adapters", default=os.environ.get("LORASTREAM_ADAPTERS"),
        help="adapter store: a directory <dir>/<adapter_id>/ or s3://bucket/prefix (env LORASTREAM_ADAPTERS)",
    )
    serve.add_argument("--s3-endpoint-url", default=os.environ.get("LORASTREAM_S3_ENDPOINT_URL"), help="S3-compatible endpoint (MinIO); default AWS")
    serve.add_argument("--base-name", default=None, help="served base's name; adapters trained for another base are refused")
    serve.add_argument(
        "--base-lane", action="store_true", default=None,
        help="read this base's own topic <prefix>.requests.base.<base name> in group <group id>.<base name>,"
        " beside consumers of other bases (default: <prefix>.requests, one base per deployment)",
    )
    cache = serve.add_argument_group("adapter cache tiers (default: limited by memory only)")
    cache.add_argument("--device-cache-mb", type=float, default=None, help="packed adapter weights on the device")
    cache.add_argument("--host-cache-mb", type=float, default=None, help="parsed adapters in host memory (pinned on CUDA)")
    cache.add_argument("--disk-cache-dir", default=None, help="local copies of remote adapters (default: a temp dir)")
    cache.add_argument("--disk-cache-mb", type=float, default=None)
    from cli.commands import add_adapter_bound_options, field_default
    from consumers.config import ServeConfig
    from gpu_engine.config import DTYPES, FAIRNESS, EngineConfig  # no torch: the defaults are defined there once

    def engine_default(name: str):
        return field_default(EngineConfig, name)

    def serve_default(name: str):
        return field_default(ServeConfig, name)

    add_adapter_bound_options(serve)
    serve.add_argument("--max-adapters-per-step", type=int, default=None, help="distinct adapters in one engine step")
    serve.add_argument("--fairness", choices=FAIRNESS, default=None, help=f"scheduling across adapters (default {engine_default('fairness')})")
    serve.add_argument("--quantize", choices=["nf4"], default=None, help="load the base in 4-bit NF4 (bitsandbytes)")
    serve.add_argument("--dtype", default=None, choices=DTYPES, help=f"(default {engine_default('dtype')})")
    serve.add_argument("--device", default=None, help=f"auto, cpu, cuda, cuda:N (default {engine_default('device')})")
    serve.add_argument("--group-id", default=None, help=f"(default {serve_default('group_id')})")
    serve.add_argument("--instance-id", default=os.environ.get("LORASTREAM_INSTANCE_ID"), help="static group membership id")
    serve.add_argument(
        "--max-inflight", type=int, default=None,
        help=f"admitted, unanswered requests; above it intake pauses until 3/4 of it (default {serve_default('max_inflight')})",
    )
    serve.add_argument("--max-batch-size", type=int, default=None, help=f"(default {engine_default('max_batch_size')})")
    serve.add_argument(
        "--cuda-graphs", action=argparse.BooleanOptionalAction, default=None,
        help="capture decode steps in CUDA graphs, one per batch bucket (default: on with CUDA, off elsewhere)",
    )
    serve.add_argument("--kv-block-size", type=int, default=None, help=f"positions per KV-cache block (default {engine_default('kv_block_size')})")
    serve.add_argument(
        "--kv-cache-blocks", type=int, default=None,
        help="KV-cache blocks (default: the memory max_batch_size sequences of max_model_len need)",
    )
    serve.add_argument("--chunk-flush-ms", type=float, default=None, help=f"(default {serve_default('chunk_flush_ms')})")
    serve.add_argument("--request-partitions", type=int, default=None, help=f"(default {serve_default('request_partitions')})")
    serve.add_argument("--metrics-port", type=int, default=None, help="serve /metrics, /healthz, /readyz on this port")
    lane = serve.add_argument_group("delivery boundaries")
    lane.add_argument(
        "--reply-topic-pattern", default=os.environ.get("LORASTREAM_REPLY_TOPIC_PATTERN"),
        help="glob of topics answers may go to (default: <prefix>.replies.*; the service's own topics never)",
    )
    lane.add_argument(
        "--dead-letter-max-kb", type=float, default=None,
        help="keep a refused record whole in its dead letter up to this size, else its head, size and SHA-256"
        f" (default {serve_default('dead_letter_max_original_bytes') // 1024})",
    )
    lane.add_argument(
        "--commit-stall-s", type=float, default=None,
        help=f"a partition with lag whose commit has not moved this long turns /readyz false (default {serve_default('commit_stall_s'):g})",
    )
    lane.add_argument(
        "--commit-interval-ms", type=float, default=None,
        help=f"commit finished offsets this often (default {serve_default('commit_interval_ms'):g})",
    )
    kafka_options(serve)

    broker = sub.add_parser("broker", help="run the embedded Kafka-compatible broker (Tansu)", description="Run the embedded, memory-only Tansu broker until interrupted.")
    broker.add_argument("--port", type=int, default=9092)

    topics = sub.add_parser(
        "topics", help="create, list, delete lorastream topics or gc dead clients' reply topics",
        description="create: the service's topics (idempotent); list: every <prefix>.* topic, reply topics with"
        " their idle time; delete: the service's topics; gc: delete the private reply topics (<prefix>.replies.*,"
        " one partition) whose newest record is older than --idle-s: a live client writes a heartbeat every"
        f" {HEARTBEAT_INTERVAL_S:g} s, so only the topics of clients that died without closing go (docs/client.md).",
    )
    topics.add_argument(
        "action", choices=["create", "list", "delete", "gc"],
        help="create | list | delete (the service's topics) | gc (idle private reply topics)",
    )
    topics.add_argument("--request-partitions", type=int, default=None, help="(default: as `serve` creates them)")
    topics.add_argument(
        "--base", action="append", default=[], metavar="NAME",
        help="create/delete: also the lane of this base, <prefix>.requests.base.NAME, with --request-partitions"
        " partitions (repeatable; see docs/deploy.md#many-bases)",
    )
    topics.add_argument(
        "--idle-s", type=float, default=DEFAULT_IDLE_S,
        help=f"gc: a reply topic idle this long has no live client (default {DEFAULT_IDLE_S:g})",
    )
    topics.add_argument("--dry-run", action="store_true", help="gc: print what would be deleted, delete nothing")
    kafka_options(topics)

    send = sub.add_parser(
        "send", help="send one prompt and print tokens as they stream",
        description="Send one prompt (or, with --chat, one chat turn); print the streamed tokens and the final usage.",
    )
    _send_options(send)
    kafka_options(send)

    tail = sub.add_parser("tail", help="follow the results topic", description="Print every Final/Error record on the results topic.")
    tail.add_argument("--from-beginning", action="store_true")
    tail.add_argument("--max-records", type=int, default=None, help="exit after this many records printed")
    tail.add_argument("--adapter", default=None, metavar="ID", help="only Finals whose lineage names this adapter")
    tail.add_argument(
        "--version", type=int, default=None, metavar="N", help="only Finals served by this adapter version"
    )
    kafka_options(tail)

    demo = sub.add_parser(
        "demo", help="the land's base and three adapters, answering side by side through the embedded broker",
        description="Build once (cached) the land's pretrained base and three task adapters, start the embedded broker"
        " and an inference consumer, stream one answer, then show the same prompts answered by the base and each adapter.",
    )
    demo.add_argument(
        "--workdir", default=None,
        help="cache of the base and the demo's adapters (default: the one `lorastream land` uses, under .cache/)",
    )
    demo.add_argument("--max-new-tokens", type=int, default=24)

    bench = sub.add_parser("bench", help="benchmarks (JSON + PNG plot)", description="Run a benchmark and write its JSON and plot.")
    bench.add_argument("which", choices=sorted(BENCHMARKS), help="which benchmark ('all' regenerates docs/benchmarks.md)")
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the benchmark (see `lorastream bench engine -- --help`)")

    from cli.train_commands import add_train_parsers

    add_train_parsers(sub, kafka_options)
    from cli.release_commands import add_release_parsers

    add_release_parsers(sub, kafka_options)

    from cli.land_commands import add_land_parsers

    add_land_parsers(sub, kafka_options)
    from cli.gateway_commands import add_gateway_parsers

    add_gateway_parsers(sub, kafka_options)
    from cli.catalogue_commands import add_catalogue_parsers

    add_catalogue_parsers(sub, kafka_options)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    quiet_libraries()  # before anything imports transformers, here and in the processes we start
    args = build_parser().parse_args(argv)
    from cli import commands

    configure(args.log_level or ("INFO" if args.command in SERVICE_COMMANDS else "WARNING"), args.log_format)

    handler = getattr(args, "handler", None) or getattr(commands, f"cmd_{args.command.replace('-', '_')}")
    try:
        return handler(args) or 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
