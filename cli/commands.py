"""The body of each CLI command. Heavy imports (torch) happen only in the commands that need them."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import re
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from schemas import Error, Final, InvalidEvent, decode_reply
from streamer import KafkaConfig, TopicNames

console = Console(highlight=False)


def run_async(main: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine on uvloop when it is installed, else on the default asyncio loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def kafka_config(args: argparse.Namespace) -> KafkaConfig:
    password = args.sasl_password or os.environ.get("LORASTREAM_SASL_PASSWORD")
    extra = {
        "security_protocol": args.security_protocol,
        "sasl_mechanism": args.sasl_mechanism,
        "sasl_plain_username": args.sasl_username,
        "sasl_plain_password": password,
        "ssl_cafile": args.ssl_cafile,
    }
    return KafkaConfig(
        bootstrap_servers=args.bootstrap_servers,
        fetch_max_wait_ms=args.fetch_max_wait_ms,
        **{key: value for key, value in extra.items() if value is not None},
    )


def _mib(value: float | None) -> int | None:
    return None if value is None else int(value * 2**20)


def add_adapter_bound_options(serve: argparse.ArgumentParser) -> None:
    """`serve`'s flags for where adapter files may come from and how large they may be (docs/adapter-store.md)."""
    from gpu_engine.config import EngineConfig  # no torch: the defaults are defined there once

    group = serve.add_argument_group("adapter boundaries")
    roots = os.environ.get("LORASTREAM_ADAPTER_URI_ROOTS")
    group.add_argument(
        "--adapter-uri-root", action="append", default=roots.split(",") if roots else [], metavar="DIR_OR_S3_PREFIX",
        help="besides --adapters: a directory or s3://bucket/prefix that registry uris may name; repeatable"
        " (env LORASTREAM_ADAPTER_URI_ROOTS, comma-separated). Any other uri is refused",
    )
    group.add_argument(
        "--max-adapter-weights-mb", type=float, default=None,
        help="a larger adapter_model.safetensors is refused before it is read or downloaded"
        f" (default {EngineConfig.max_adapter_weights_bytes / 2**20:g})",
    )
    group.add_argument(
        "--max-adapter-config-mb", type=float, default=None,
        help=f"the same for adapter_config.json (default {EngineConfig.max_adapter_config_bytes / 2**20:g})",
    )
    group.add_argument(
        "--max-pending-adapter-loads", type=int, default=None,
        help="adapter loads queued or running; requests beyond get adapter_unavailable"
        f" (default {EngineConfig.max_pending_adapter_loads})",
    )


def field_default(config: type, name: str) -> Any:
    """The default of one field of a config dataclass, for a flag's help text: defined there once, never here."""
    (found,) = (f for f in dataclasses.fields(config) if f.name == name)
    return found.default


def _given(**settings):
    """Only the settings given on the command line; the rest keep their one default in the config."""
    return {name: value for name, value in settings.items() if value is not None}


def serve_config(args: argparse.Namespace):
    """The ServeConfig of `serve`'s flags; a flag not given keeps the dataclass's default."""
    from consumers.config import ServeConfig

    return ServeConfig(
        **_given(
            group_id=args.group_id,
            group_instance_id=args.instance_id,
            max_inflight=args.max_inflight,
            chunk_flush_ms=args.chunk_flush_ms,
            request_partitions=args.request_partitions,
            metrics_port=args.metrics_port,
            reply_topic_pattern=args.reply_topic_pattern,
            dead_letter_max_original_bytes=None if args.dead_letter_max_kb is None else int(args.dead_letter_max_kb * 1024),
            commit_stall_s=args.commit_stall_s,
            commit_interval_ms=args.commit_interval_ms,
            base_lane=args.base_lane,
        )
    )


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The EngineConfig fields `serve`'s flags set; a flag not given keeps the dataclass's default."""
    return dict(
        model_path=args.model,
        adapter_root=args.adapters,
        **_given(
            quantize=args.quantize,
            dtype=args.dtype,
            device=args.device,
            max_batch_size=args.max_batch_size,
            cuda_graphs=args.cuda_graphs,
            kv_block_size=args.kv_block_size,
            kv_cache_blocks=args.kv_cache_blocks,
            base_name=args.base_name,
            s3_endpoint_url=args.s3_endpoint_url,
            device_cache_bytes=_mib(args.device_cache_mb),
            host_cache_bytes=_mib(args.host_cache_mb),
            disk_cache_dir=args.disk_cache_dir,
            disk_cache_bytes=_mib(args.disk_cache_mb),
            max_adapters_per_step=args.max_adapters_per_step,
            fairness=args.fairness,
            adapter_uri_roots=tuple(args.adapter_uri_root),
            max_adapter_weights_bytes=_mib(args.max_adapter_weights_mb),
            max_adapter_config_bytes=_mib(args.max_adapter_config_mb),
            max_pending_adapter_loads=args.max_pending_adapter_loads,
        ),
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from consumers.serve import build_engine_thread, serve_forever

    config, topics = serve_config(args), TopicNames(args.topic_prefix)
    if config.base_lane:  # checked before the model loads: a lane is named by its base
        try:
            if args.base_name is None:
                raise ValueError("--base-lane needs --base-name (the lane is named by it)")
            topics.requests_for(args.base_name)
        except ValueError as exc:
            console.print(f"[red]error[/] {escape(str(exc))}")
            return 2
    runner = build_engine_thread(**engine_options(args))
    run_async(serve_forever(kafka_config(args), topics, config, runner))
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    from streamer import TansuBroker

    with TansuBroker(port=args.port) as broker:
        console.print(f"[bold]Tansu broker[/] listening at [cyan]{broker.bootstrap_servers}[/] (memory-only); Ctrl-C stops it")
        stop = asyncio.Event()

        async def wait() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()

        run_async(wait())
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from streamer import default_topic_specs, delete_topics, ensure_topics, list_topics
    from streamer.reply_topic_gc import collect_idle_reply_topics, reply_topic_ages

    kafka, names = kafka_config(args), TopicNames(args.topic_prefix)
    specs = default_topic_specs(names, **_given(request_partitions=args.request_partitions))
    (requests,) = (spec for spec in specs if spec.name == names.requests)
    try:  # each base's lane
        specs += [dataclasses.replace(requests, name=names.requests_for(base)) for base in args.base]
    except ValueError as exc:
        console.print(f"[red]error[/] {escape(str(exc))}")
        return 2

    async def act() -> None:
        if args.action == "gc":
            gone = await collect_idle_reply_topics(kafka, names, idle_s=args.idle_s, dry_run=args.dry_run)
            verb = "would delete" if args.dry_run else "deleted"
            console.print(f"{verb} {len(gone)} idle reply topic(s)" + "".join(f"\n  {name}" for name in gone))
            return
        if args.action == "create":
            await ensure_topics(kafka, specs)
        elif args.action == "delete":
            await delete_topics(kafka, [spec.name for spec in specs])
        idle_s = {age.name: age.idle_s for age in await reply_topic_ages(kafka, names)}
        for name in sorted(await list_topics(kafka)):
            if name in idle_s:
                age = "no records" if idle_s[name] is None else f"idle {idle_s[name]:.0f} s"
                console.print(f"{name}  [dim]({age})[/]")
            elif name.startswith(args.topic_prefix + "."):
                console.print(name)

    run_async(act())
    return 0


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
_ESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)


def unescape(text: str) -> str:
    r"""`text` with \n, \t, \r and \\ turned into the characters they name; other backslashes stay."""
    return _ESCAPE_RE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(0)), text)


def send_input(args: argparse.Namespace) -> tuple[str | None, list[dict[str, str]] | None]:
    """(prompt, messages) of `send`'s arguments: exactly one of them is set. Raises ValueError."""
    if (args.prompt is None) == (args.prompt_file is None):
        raise ValueError("give a prompt argument or --prompt-file (one of them)")
    if args.prompt_file is not None:
        if args.escapes:
            raise ValueError("--escapes applies to the prompt argument only, not to --prompt-file")
        text = sys.stdin.read() if args.prompt_file == "-" else Path(args.prompt_file).read_text(encoding="utf-8")
    else:
        text = unescape(args.prompt) if args.escapes else args.prompt
    if not args.chat:
        if args.system is not None:
            raise ValueError("--system needs --chat")
        return text, None
    messages = [] if args.system is None else [{"role": "system", "content": args.system}]
    return None, [*messages, {"role": "user", "content": text}]


def cmd_send(args: argparse.Namespace) -> int:
    from streamer import LoraClient, RequestFailed

    try:
        prompt, messages = send_input(args)
    except (ValueError, OSError) as exc:
        console.print(f"[red]error[/] {escape(str(exc))}")
        return 2

    async def send() -> int:
        async with LoraClient(config=kafka_config(args), topics=TopicNames(args.topic_prefix)) as client:
            try:
                async for record in client.stream(
                    prompt,
                    adapter_id=args.adapter,
                    messages=messages,
                    ignore_eos=args.ignore_eos,
                    max_new_tokens=args.max_new_tokens,
                    temperature=args.temperature,
                    top_p=args.top_p,
                    top_k=args.top_k,
                    stop=tuple(args.stop),
                    seed=args.seed,
                    timeout_s=args.timeout_s,
                    base=args.base,
                ):
                    if isinstance(record, Final):
                        print_final(record)
                    else:
                        console.print(record.text, end="", markup=False)
            except RequestFailed as exc:
                console.print(f"\n[red]error[/] {exc}")
                return 1
            except (ValueError, InvalidEvent) as exc:  # refused before it was sent
                console.print(f"[red]error[/] {escape(str(exc))}")
                return 2
        return 0

    return run_async(send())


def print_final(final: Final) -> None:
    t = final.timings
    console.print(
        f"\n[dim]finish={final.finish_reason.value} tokens={final.usage.prompt_tokens}+"
        f"{final.usage.completion_tokens} ttft={t.ttft_ms:.1f}ms total={t.total_ms:.1f}ms[/]"
    )


def tail_matches(reply: Final | Error, adapter_id: str | None, version: int | None) -> bool:
    """Whether `tail --adapter/--version` prints a results record: a Final whose lineage names that
    adapter (and version); with neither filter, every record."""
    if adapter_id is None and version is None:
        return True
    lineage = reply.lineage if isinstance(reply, Final) else None
    if lineage is None:
        return False
    return (adapter_id is None or lineage.adapter_id == adapter_id) and (
        version is None or lineage.adapter_version == version
    )


def cmd_tail(args: argparse.Namespace) -> int:
    from streamer import make_consumer

    kafka, names = kafka_config(args), TopicNames(args.topic_prefix)

    async def tail() -> None:
        consumer = make_consumer(
            kafka, names.results, auto_offset_reset="earliest" if args.from_beginning else "latest"
        )
        await consumer.start()
        seen = 0
        try:
            async for record in consumer:
                reply = decode_reply(record.value or b"")
                if not tail_matches(reply, args.adapter, args.version):
                    continue
                if isinstance(reply, Final):
                    version = "" if reply.lineage is None else f" version={reply.lineage.adapter_version}"
                    console.print(
                        f"[green]{reply.request_id}[/] adapter={reply.adapter_id}{version} "
                        f"{reply.finish_reason.value}: {reply.text!r}",
                        markup=True,
                    )
                elif isinstance(reply, Error):
                    console.print(f"[red]{reply.request_id}[/] {reply.code.value}: {reply.message}")
                seen += 1
                if args.max_records is not None and seen >= args.max_records:
                    return
        finally:
            await consumer.stop()

    run_async(tail())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from cli.demo import run_demo

    return run_async(run_demo(args.workdir, max_new_tokens=args.max_new_tokens))


def cmd_bench(args: argparse.Namespace) -> int:
    import importlib
    import sys
    from pathlib import Path

    from cli.main import BENCHMARKS

    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "bench" / "__init__.py").is_file() and str(checkout) not in sys.path:
        sys.path.append(str(checkout))  # an editable install of a checkout: its bench/ sits beside cli/
    try:  # the runtime's one import of bench/, a development package the wheel leaves out
        import bench  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name != "bench":
            raise
        print(
            "lorastream bench: the benchmarks are development-only (not in the wheel); from a source "
            f"checkout run `python -m cli bench {args.which} ...` or `make bench`",
            file=sys.stderr,
        )
        return 2
    module = importlib.import_module(BENCHMARKS[args.which])
    return module.main([arg for arg in args.rest if arg != "--"])
