"""`lorastream bench gateway`: the OpenAI gateway's cost over a direct LoraClient, side by side.

One process holds the engine (bench.kafka_serving's model and adapters), a running
InferenceService, a LoraClient and a gateway (uvicorn on a free port) in front of the same
Kafka topics. Rounds alternate (A/B/B/A/...) between two paths, each streaming the same
`--streams` concurrent requests (ignore_eos, so every answer has the same length):

- direct: `LoraClient.stream` → Kafka → service → Kafka → LoraClient;
- gateway: HTTP POST /v1/completions with `stream: true` (a plain httpx client reading the SSE
  lines, so the SDK's parsing is not counted) → gateway → the same path → SSE back.

TTFT is taken at the caller, from just before the request is sent to its first text; tokens/s is
delivered tokens over the round's wall time. Reported: the gateway's added TTFT p50 (ms) and its
tokens/s as a ratio of direct's, both from the same run. Everything shares this process's event
loop and the machine's cores, so the figures include the gateway's CPU cost as contention.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson

from bench.kafka import broker_for, environment
from bench.kafka_serving import build_engine_thread, running_service
from bench.kafka_workload import StreamClock, StreamTiming, Workload, make_workload
from lorastream.stats import percentile
from schemas import TokenChunk

DIRECT, GATEWAY = "direct", "gateway"


async def direct_stream(client, prompt: str, adapter_id: str | None, max_new_tokens: int) -> StreamTiming:
    clock = StreamClock()
    async for record in client.stream(prompt, adapter_id, max_new_tokens=max_new_tokens, ignore_eos=True):
        if isinstance(record, TokenChunk):
            clock.on_tokens(len(record.token_ids))
    return clock.finish()


async def gateway_stream(http, prompt: str, adapter_id: str | None, max_new_tokens: int) -> StreamTiming:
    body = {"model": adapter_id or "base", "prompt": prompt, "max_tokens": max_new_tokens, "temperature": 0,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    clock = StreamClock()
    async with http.stream("POST", "/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            event = orjson.loads(line[6:])
            if event["choices"] and event["choices"][0]["text"]:
                clock.on_tokens(1)  # a text event; the exact count comes with the usage below
            elif event.get("usage"):
                clock.tokens = event["usage"]["completion_tokens"]
    return clock.finish()


async def run_round(path: str, workload: Workload, client, http) -> dict:
    n = workload.max_new_tokens
    start_s = time.perf_counter()
    if path == DIRECT:
        streams = await asyncio.gather(*(direct_stream(client, p, a, n) for p, a in workload.requests()))
    else:
        streams = await asyncio.gather(*(gateway_stream(http, p, a, n) for p, a in workload.requests()))
    wall_s = time.perf_counter() - start_s
    tokens = sum(s.tokens for s in streams)
    return {"path": path, "wall_s": wall_s, "tokens": tokens, "tokens_per_s": tokens / wall_s,
            "ttft_ms": [s.ttft_ms for s in streams]}


async def run_benchmark(args, kafka, workdir: Path) -> list[dict]:
    import httpx2 as httpx

    from gateway import Gateway, GatewayConfig
    from gateway.server import bound_port, uvicorn_server
    from streamer import LoraClient, TopicNames, default_topic_specs, delete_topics

    runner, adapter_ids = build_engine_thread(workdir, args)
    workload = make_workload(args.streams, [None, *adapter_ids], args.new_tokens)
    topics = TopicNames(f"bench-gw-{uuid.uuid4().hex[:8]}")
    rounds: list[dict] = []
    try:
        async with running_service(kafka, topics, runner, args.chunk_flush_ms), LoraClient(config=kafka, topics=topics) as client:
            server = uvicorn_server(Gateway(GatewayConfig(port=0, adapters_wait_s=0), kafka, topics))
            serving = asyncio.create_task(server.serve())
            while not server.started:
                await asyncio.sleep(0.05)
            limits = httpx.Limits(max_connections=args.streams, max_keepalive_connections=args.streams)
            base_url = f"http://127.0.0.1:{bound_port(server)}"
            try:
                async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=300) as http:
                    for index in range(args.warmup_rounds + args.rounds):
                        for path in (DIRECT, GATEWAY) if index % 2 == 0 else (GATEWAY, DIRECT):
                            result = await run_round(path, workload, client, http)
                            if index >= args.warmup_rounds:
                                rounds.append(result)
                            print(f"round {index + 1} {path}: {result['tokens_per_s']:.0f} tok/s, TTFT p50 "
                                  f"{percentile(result['ttft_ms'], 50):.1f} ms", file=sys.stderr)
            finally:
                server.should_exit = True
                await serving
    finally:
        with contextlib.suppress(Exception):
            await delete_topics(kafka, [s.name for s in default_topic_specs(topics)])
    return rounds


def summarize(rounds: list[dict]) -> dict:
    out = {}
    for path in (DIRECT, GATEWAY):
        mine = [r for r in rounds if r["path"] == path]
        ttft = [t for r in mine for t in r["ttft_ms"]]
        out[path] = {"ttft_p50_ms": percentile(ttft, 50), "ttft_p99_ms": percentile(ttft, 99),
                     "tokens_per_s": sum(r["tokens"] for r in mine) / sum(r["wall_s"] for r in mine)}
    return {
        **out,
        "gateway_added_ttft_p50_ms": out[GATEWAY]["ttft_p50_ms"] - out[DIRECT]["ttft_p50_ms"],
        "gateway_tokens_per_s_ratio": out[GATEWAY]["tokens_per_s"] / out[DIRECT]["tokens_per_s"],
    }


def save_plot(path: str, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_ttft, ax_tps) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, style in ((DIRECT, "-"), (GATEWAY, "--")):
        mine = [r for r in result["raw"]["rounds"] if r["path"] == name]
        values = sorted(t for r in mine for t in r["ttft_ms"])
        ax_ttft.plot(values, [(i + 1) / len(values) for i in range(len(values))], style, label=name)
        ax_tps.plot(range(1, len(mine) + 1), [r["tokens_per_s"] for r in mine], "o" + style, label=name)
    ax_ttft.set(xlabel="time to first token at the caller (ms)", ylabel="fraction of streams", title="TTFT")
    ax_tps.set(xlabel="round", ylabel="delivered tokens/s", title="Throughput per round")
    ax_tps.set_ylim(bottom=0)
    for ax in (ax_ttft, ax_tps):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    config = result["config"]
    fig.suptitle(f"{config['streams']} concurrent streams, {config['new_tokens']} tokens each: gateway adds "
                 f"{result['gateway_added_ttft_p50_ms']:.1f} ms TTFT p50, tokens/s x{result['gateway_tokens_per_s_ratio']:.2f}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from consumers.config import ServeConfig

    parser = argparse.ArgumentParser(prog="lorastream bench gateway", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="FILE", default="docs/bench/gateway.json", help="results (default %(default)s)")
    parser.add_argument("--plot", metavar="FILE", default="docs/bench/gateway.png", help="PNG plot (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help="1 warm-up and 2 measured rounds per path of 16 new tokens")
    parser.add_argument("--broker", choices=("kafka", "tansu"), default="kafka", help="broker started for the run (default %(default)s)")
    parser.add_argument("--bootstrap-servers", help="use this running broker instead of starting one")
    parser.add_argument("--fetch-max-wait-ms", type=int, help="consumers' fetch wait (default as `bench kafka`)")
    parser.add_argument("--rounds", type=int, default=4, help="measured rounds per path, interleaved (default %(default)s)")
    parser.add_argument("--warmup-rounds", type=int, default=1, help="unrecorded rounds per path first (default %(default)s)")
    parser.add_argument("--streams", type=int, default=64, help="concurrent streams (default %(default)s)")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens per answer (default %(default)s)")
    parser.add_argument("--chunk-flush-ms", type=float, default=ServeConfig().chunk_flush_ms,
                        help="the service's token chunk flush interval (default %(default)s)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads (default %(default)s)")
    parser.add_argument("--workdir", help="where to build the model and adapters (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.warmup_rounds, args.new_tokens = 2, 1, 16
    if min(args.rounds, args.streams, args.new_tokens, args.threads) < 1 or args.warmup_rounds < 0:
        parser.error("--rounds, --streams, --new-tokens, --threads must be >= 1 and --warmup-rounds >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    env = environment(args)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="lorastream-bench-gateway-"))
    try:
        with broker_for(args) as (kafka, broker_kind, _):
            rounds = asyncio.run(run_benchmark(args, kafka, workdir))
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    result = {
        "config": {"streams": args.streams, "new_tokens": args.new_tokens, "rounds": args.rounds,
                   "warmup_rounds": args.warmup_rounds, "chunk_flush_ms": args.chunk_flush_ms,
                   "broker": broker_kind, "fetch_max_wait_ms": kafka.fetch_max_wait_ms, "quick": args.quick},
        "environment": env,
        **summarize(rounds),
        "raw": {"rounds": rounds},
    }
    print(json.dumps({k: v for k, v in result.items() if k != "raw"}, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        save_plot(args.plot, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
