"""`lorastream bench kafka`: concurrent streams through Kafka against the same engine in-process.

One serving process holds the engine (a small Llama-shaped model with random weights and a few
LoRA adapters) and a running InferenceService, as `lorastream serve` does. Two paths share that
engine, in alternating rounds (A/B/B/A/...):

- kafka: a separate client process (as real clients are) streams 64 requests with LoraClient →
  requests topic → InferenceService → engine thread → reply topic → LoraClient;
- inprocess: the serving process submits the same prompts, adapters and max_new_tokens straight
  to the service's EngineRunner (the service idles meanwhile).

Times are taken with time.perf_counter (CLOCK_MONOTONIC, one clock for every process on the
machine) where the caller sees them: TTFT from just before a request is sent to its first token,
total to its last record. CPU seconds of the serving, client and broker processes are recorded per
round. `submit_rps` is measured in the client process, on a requests topic nobody consumes: N
concurrent `LoraClient.submit` calls until the broker acknowledged every one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Self

ROOT = Path(__file__).resolve().parents[1]
MODEL_SHAPE = {"hidden": 512, "layers": 4, "heads": 8, "kv_heads": 4}
ADAPTER_RANK = 8
ADAPTER_TARGETS = ("q_proj", "v_proj")
NUM_ADAPTERS = 4
PROBE_NEW_TOKENS = 4  # single-request probes measure TTFT only
KAFKA, INPROCESS = "kafka", "inprocess"
TARGETS = {"kafka_over_inprocess": 0.90, "ttft_overhead_ms_p50": 15.0, "submit_rps": 5000.0}
FETCH_MAX_WAIT_MS = {"kafka": 500, "tansu": 5}  # long poll where the broker answers on arrival
PROCESSES = ("serving", "client", "broker")


@dataclasses.dataclass(frozen=True)
class Workload:
    prompts: list[str]
    adapters: list[str | None]
    max_new_tokens: int

    def requests(self) -> Iterator[tuple[str, str | None]]:
        return zip(self.prompts, self.adapters)


@dataclasses.dataclass(frozen=True)
class StreamTiming:
    """One request as its caller saw it; times from just before it was sent."""

    ttft_ms: float
    total_ms: float
    tokens: int
    records: int  # records that carried tokens (Kafka: TokenChunks; in-process: engine events)


@dataclasses.dataclass(frozen=True)
class RoundResult:
    path: str
    wall_s: float  # first request sent → last answer complete
    streams: list[StreamTiming]
    cpu_s: dict[str, float]  # CPU seconds per process (see PROCESSES) during the round

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.streams)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s


class StreamClock:
    """When a request was sent, when its first token arrived, and what it delivered."""

    def __init__(self) -> None:
        self.sent_s = time.perf_counter()
        self.first_token_s: float | None = None
        self.tokens = 0
        self.records = 0

    def on_tokens(self, count: int) -> None:
        if not count:
            return
        if self.first_token_s is None:
            self.first_token_s = time.perf_counter()
        self.tokens += count
        self.records += 1

    def finish(self) -> StreamTiming:
        end_s = time.perf_counter()
        first_s = end_s if self.first_token_s is None else self.first_token_s
        return StreamTiming((first_s - self.sent_s) * 1000, (end_s - self.sent_s) * 1000, self.tokens, self.records)


def make_workload(streams: int, adapter_ids: list[str], max_new_tokens: int) -> Workload:
    prompts = [f"Request {i}: a short note about item {7 * i + 3} for the team." for i in range(streams)]
    return Workload(prompts, [adapter_ids[i % len(adapter_ids)] for i in range(streams)], max_new_tokens)


# ---- the client process ---------------------------------------------------------------------


async def kafka_stream(client, prompt: str, adapter_id: str | None, max_new_tokens: int) -> StreamTiming:
    from schemas import TokenChunk

    clock = StreamClock()
    async for record in client.stream(prompt, adapter_id, max_new_tokens=max_new_tokens):
        if isinstance(record, TokenChunk):
            clock.on_tokens(len(record.token_ids))
    return clock.finish()


async def kafka_round(client, workload: Workload) -> tuple[float, list[StreamTiming]]:
    """All streams started at once, each sending its request on its first iteration."""
    start_s = time.perf_counter()
    n = workload.max_new_tokens
    timings = await asyncio.gather(*(kafka_stream(client, p, a, n) for p, a in workload.requests()))
    return time.perf_counter() - start_s, list(timings)


async def kafka_probe(client, workload: Workload) -> list[StreamTiming]:
    """One request at a time: the latency of the Kafka hops with nothing else running."""
    return [await kafka_stream(client, p, a, workload.max_new_tokens) for p, a in workload.requests()]


async def measure_submit_rps(kafka, topics, workload: Workload, count: int) -> float:
    """Requests published per second: `count` concurrent `submit`s until the broker acked all."""
    from streamer import LoraClient

    requests = list(workload.requests())
    async with LoraClient(config=kafka, topics=topics) as client:
        start_s = time.perf_counter()
        await asyncio.gather(
            *(
                client.submit(*requests[i % len(requests)], max_new_tokens=workload.max_new_tokens)
                for i in range(count)
            )
        )
        return count / (time.perf_counter() - start_s)


async def serve_client_commands(conn, kafka, topics, submit_topics) -> None:
    """Answer ("round" | "probe", workload) and ("submit", workload, count) until ("stop",)."""
    from streamer import LoraClient

    async with LoraClient(config=kafka, topics=topics) as client:
        conn.send(("ready",))
        while (command := await asyncio.to_thread(conn.recv))[0] != "stop":
            if command[0] == "round":
                conn.send(await kafka_round(client, command[1]))
            elif command[0] == "probe":
                conn.send(await kafka_probe(client, command[1]))
            else:
                conn.send(await measure_submit_rps(kafka, submit_topics, command[1], command[2]))


def client_process_main(conn, kafka, topics, submit_topics) -> None:
    try:
        asyncio.run(serve_client_commands(conn, kafka, topics, submit_topics))
    except BaseException as exc:
        conn.send(("error", repr(exc)))
        raise


class ClientProcess:
    """The load generator: a separate process with its own LoraClient, driven over a pipe."""

    def __init__(self, kafka, topics, submit_topics) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(
            target=client_process_main, args=(child_conn, kafka, topics, submit_topics), daemon=True
        )

    @property
    def pid(self) -> int | None:
        return self._process.pid

    async def __aenter__(self) -> Self:
        self._process.start()
        await self._ask(None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._process.is_alive():
            self._conn.send(("stop",))
        await asyncio.to_thread(self._process.join, 30)
        if self._process.is_alive():
            self._process.kill()

    async def _ask(self, command):
        if command is not None:
            self._conn.send(command)
        try:
            answer = await asyncio.to_thread(self._conn.recv)
        except EOFError:
            raise RuntimeError(f"the client process exited with code {self._process.exitcode}") from None
        if isinstance(answer, tuple) and answer and answer[0] == "error":
            raise RuntimeError(f"the client process failed: {answer[1]}")
        return answer

    async def round(self, workload: Workload) -> tuple[float, list[StreamTiming]]:
        return await self._ask(("round", workload))

    async def probe(self, workload: Workload) -> list[StreamTiming]:
        return await self._ask(("probe", workload))

    async def submit_rps(self, workload: Workload, count: int) -> float:
        return await self._ask(("submit", workload, count))


# ---- the serving process --------------------------------------------------------------------


def inprocess_request(runner, loop, prompt: str, adapter_id: str | None, max_new_tokens: int) -> asyncio.Future:
    """Submit the engine request the service builds for the same InferenceRequest.

    Returns a future of its StreamTiming; events reach the event loop as the service's do.
    """
    from consumers.inference.answer import derived_seed
    from gpu_engine.types import GenerationRequest, SamplingParams

    done: asyncio.Future[StreamTiming] = loop.create_future()
    request_id = uuid.uuid4().hex
    sampling = SamplingParams(max_new_tokens=max_new_tokens, seed=derived_seed(request_id))
    clock = StreamClock()

    def on_event(event) -> None:
        clock.on_tokens(len(event.token_ids))
        if event.is_final:
            done.set_result(clock.finish())

    runner.submit(
        GenerationRequest(request_id, prompt, adapter_id, sampling),
        lambda event: loop.call_soon_threadsafe(on_event, event),
    )
    return done


async def inprocess_round(runner, workload: Workload) -> tuple[float, list[StreamTiming]]:
    """All requests submitted in one synchronous loop: the engine sees them arrive together."""
    loop = asyncio.get_running_loop()
    start_s = time.perf_counter()
    n = workload.max_new_tokens
    timings = await asyncio.gather(*(inprocess_request(runner, loop, p, a, n) for p, a in workload.requests()))
    return time.perf_counter() - start_s, list(timings)


async def inprocess_probe(runner, workload: Workload) -> list[StreamTiming]:
    loop = asyncio.get_running_loop()
    n = workload.max_new_tokens
    return [await inprocess_request(runner, loop, p, a, n) for p, a in workload.requests()]


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid is not None}
        self.start = {name: process_cpu_s(pid) for name, pid in self.pids.items()}

    def used_s(self) -> dict[str, float]:
        return {name: process_cpu_s(pid) - self.start[name] for name, pid in self.pids.items()}


async def run_round(path: str, workload: Workload, client: ClientProcess, runner, pids) -> RoundResult:
    meter = CpuMeter(pids)
    if path == KAFKA:
        wall_s, streams = await client.round(workload)
    else:
        wall_s, streams = await inprocess_round(runner, workload)
    return RoundResult(path, wall_s, streams, meter.used_s())


def build_engine_runner(workdir: Path, args):
    """The model, NUM_ADAPTERS PEFT adapters (loaded), and an unstarted EngineRunner."""
    from gpu_engine.config import EngineConfig
    from gpu_engine.engine import Engine
    from gpu_engine.runner import EngineRunner
    from gpu_engine.tiny import build_tiny_adapter, build_tiny_model

    model_dir = build_tiny_model(workdir / "model", **MODEL_SHAPE)
    adapter_ids = [f"bench/a{i}" for i in range(NUM_ADAPTERS)]
    for i, adapter_id in enumerate(adapter_ids):
        build_tiny_adapter(model_dir, workdir / "adapters" / adapter_id, r=ADAPTER_RANK, alpha=2 * ADAPTER_RANK,
                           target_modules=ADAPTER_TARGETS, seed=i + 1)
    config = EngineConfig(str(model_dir), str(workdir / "adapters"), device="cpu",
                          max_batch_size=args.streams, max_model_len=64 + args.new_tokens)
    engine = Engine(config)
    for adapter_id in adapter_ids:
        engine.load_adapter(adapter_id)
    return EngineRunner(engine), adapter_ids


@contextlib.asynccontextmanager
async def running_service(kafka, topics, runner, chunk_flush_ms: float):
    from consumers.config import ServeConfig
    from consumers.inference import InferenceService

    service = InferenceService(kafka, topics, ServeConfig(chunk_flush_ms=chunk_flush_ms), runner)
    task = asyncio.create_task(service.run())
    ready = asyncio.create_task(service.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises the start-up error
    if ready not in done:
        raise TimeoutError("the inference service did not become ready in 60 s")
    try:
        yield service
    finally:
        service.stop()
        await asyncio.wait_for(task, 60)


@dataclasses.dataclass
class Samples:
    rounds: list[RoundResult] = dataclasses.field(default_factory=list)
    probes: dict[str, list[StreamTiming]] = dataclasses.field(default_factory=lambda: {KAFKA: [], INPROCESS: []})
    submit_rps: list[float] = dataclasses.field(default_factory=list)


async def run_benchmark(args, kafka, broker_pid: int | None, workdir: Path) -> Samples:
    from streamer import TopicNames, default_topic_specs, delete_topics, ensure_topics

    runner, adapter_ids = build_engine_runner(workdir, args)
    workload = make_workload(args.streams, adapter_ids, args.new_tokens)
    probe_workload = make_workload(args.probe_requests, adapter_ids, PROBE_NEW_TOKENS)
    run_id = uuid.uuid4().hex[:8]
    topics, submit_topics = TopicNames(f"bench-{run_id}"), TopicNames(f"bench-{run_id}-submit")
    submit_specs = default_topic_specs(submit_topics)[:1]  # its requests topic only: nobody reads it
    await ensure_topics(kafka, submit_specs)
    samples = Samples()
    try:
        async with (
            running_service(kafka, topics, runner, args.chunk_flush_ms) as service,
            ClientProcess(kafka, topics, submit_topics) as client,
        ):
            pids = {"serving": os.getpid(), "client": client.pid, "broker": broker_pid}
            for index in range(args.warmup_rounds):  # the broker's JIT needs a few thousand requests
                print(f"warm-up {index + 1}/{args.warmup_rounds}", file=sys.stderr)
                for path in (KAFKA, INPROCESS):
                    await run_round(path, workload, client, runner, pids)
                await client.submit_rps(workload, args.submit_count)
            for index in range(args.rounds):
                for path in (KAFKA, INPROCESS) if index % 2 == 0 else (INPROCESS, KAFKA):
                    samples.rounds.append(await run_round(path, workload, client, runner, pids))
                    probe = client.probe(probe_workload) if path == KAFKA else inprocess_probe(runner, probe_workload)
                    samples.probes[path].extend(await probe)
                samples.submit_rps.append(await client.submit_rps(workload, args.submit_count))
                print(f"round {index + 1}/{args.rounds}: chunks per reply record so far {service.chunks_per_reply_record:.1f}, "
                      + ", ".join(f"{r.path} {r.tokens_per_s:.0f} tok/s" for r in samples.rounds[-2:])
                      + f", submit {samples.submit_rps[-1]:.0f}/s", file=sys.stderr)
    finally:
        names = [s.name for s in default_topic_specs(topics) + submit_specs]
        with contextlib.suppress(Exception):  # an external broker keeps them until retention
            await delete_topics(kafka, names)
    return samples


# ---- results --------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def path_summary(rounds: list[RoundResult]) -> dict:
    ttft = [s.ttft_ms for r in rounds for s in r.streams]
    total = [s.total_ms for r in rounds for s in r.streams]
    return {
        "tokens_per_s_median": statistics.median(r.tokens_per_s for r in rounds),
        "ttft_ms_p50": percentile(ttft, 50),
        "ttft_ms_p99": percentile(ttft, 99),
        "total_ms_p50": percentile(total, 50),
        "total_ms_p99": percentile(total, 99),
        "records_per_stream_median": statistics.median(s.records for r in rounds for s in r.streams),
        "cpu_s_per_round_median": {
            name: statistics.median(r.cpu_s[name] for r in rounds) for name in PROCESSES if name in rounds[0].cpu_s
        },
    }


def kafka_cpu_us_per_token(paths: dict, tokens_per_round: float) -> dict[str, float]:
    """Extra CPU the Kafka path spends per delivered token, per process and in total (µs)."""
    kafka, inprocess = paths[KAFKA]["cpu_s_per_round_median"], paths[INPROCESS]["cpu_s_per_round_median"]
    extra = {name: (kafka[name] - inprocess[name]) * 1e6 / tokens_per_round for name in kafka}
    return {**extra, "total": sum(extra.values())}


def summarize(samples: Samples) -> dict:
    by_path = {path: [r for r in samples.rounds if r.path == path] for path in (KAFKA, INPROCESS)}
    paths = {path: path_summary(rs) for path, rs in by_path.items()}
    pair_ratios = [k.tokens_per_s / i.tokens_per_s for k, i in zip(by_path[KAFKA], by_path[INPROCESS])]
    probe_ttft_ms_p50 = {path: percentile([s.ttft_ms for s in probe], 50) for path, probe in samples.probes.items()}
    figures = {
        "kafka_over_inprocess": statistics.median(pair_ratios),
        "ttft_overhead_ms_p50": paths[KAFKA]["ttft_ms_p50"] - paths[INPROCESS]["ttft_ms_p50"],
        "submit_rps": statistics.median(samples.submit_rps),
    }
    return {
        "paths": paths,
        "ratios": {"kafka_over_inprocess": figures["kafka_over_inprocess"]},
        "ttft_overhead_ms_p50": figures["ttft_overhead_ms_p50"],
        "submit_rps": figures["submit_rps"],
        "targets": TARGETS,
        "met": {name: meets(name, value) for name, value in figures.items()},
        "single_request": {  # one request at a time: the Kafka hops without a batch around them
            "ttft_ms_p50": probe_ttft_ms_p50,
            "ttft_overhead_ms_p50": probe_ttft_ms_p50[KAFKA] - probe_ttft_ms_p50[INPROCESS],
        },
        "kafka_cpu_overhead_us_per_token": kafka_cpu_us_per_token(
            paths, statistics.median(r.tokens for r in by_path[KAFKA])
        ),
        "raw": {
            "pair_ratios": pair_ratios,
            "submit_rps": samples.submit_rps,
            "rounds": [
                {"path": r.path, "wall_s": r.wall_s, "tokens": r.tokens, "tokens_per_s": r.tokens_per_s,
                 "cpu_s": r.cpu_s, "streams": [dataclasses.asdict(s) for s in r.streams]}
                for r in samples.rounds
            ],
            "single_request_ttft_ms": {path: [s.ttft_ms for s in probe] for path, probe in samples.probes.items()},
        },
    }


def meets(name: str, value: float) -> bool:
    return value <= TARGETS[name] if name == "ttft_overhead_ms_p50" else value >= TARGETS[name]


def print_table(result: dict) -> None:
    print(f"{'path':<11}{'tokens/s':>10}{'TTFT p50':>10}{'TTFT p99':>10}{'total p50':>11}{'total p99':>11}"
          f"{'CPU s/round (serving, client, broker)':>40}")
    for path, s in result["paths"].items():
        cpu = ", ".join(f"{v:.2f}" for v in s["cpu_s_per_round_median"].values())
        print(f"{path:<11}{s['tokens_per_s_median']:>10.1f}{s['ttft_ms_p50']:>10.1f}{s['ttft_ms_p99']:>10.1f}"
              f"{s['total_ms_p50']:>11.1f}{s['total_ms_p99']:>11.1f}{cpu:>40}")
    print("(latencies in ms, at the caller)\n")
    figures = {"kafka_over_inprocess": result["ratios"]["kafka_over_inprocess"],
               "ttft_overhead_ms_p50": result["ttft_overhead_ms_p50"], "submit_rps": result["submit_rps"]}
    print(f"{'figure':<24}{'value':>11}  {'target':<10}met")
    for name, value in figures.items():
        bound = f"{'<=' if name == 'ttft_overhead_ms_p50' else '>='} {TARGETS[name]:g}"
        print(f"{name:<24}{value:>11.3f}  {bound:<10}{'yes' if result['met'][name] else 'NO'}")
    single = result["single_request"]
    print(f"\none request at a time: TTFT p50 kafka {single['ttft_ms_p50'][KAFKA]:.1f} ms, in-process "
          f"{single['ttft_ms_p50'][INPROCESS]:.1f} ms, overhead {single['ttft_overhead_ms_p50']:.1f} ms")
    cpu = result["kafka_cpu_overhead_us_per_token"]
    print("extra CPU per delivered token on the Kafka path: "
          + ", ".join(f"{name} {value:.0f} us" for name, value in cpu.items()))


def save_plot(path: str, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = result["raw"]["rounds"]
    fig, (ax_ttft, ax_total, ax_single, ax_tps) = plt.subplots(1, 4, figsize=(18, 4.2))
    for name, style in ((KAFKA, "-"), (INPROCESS, "--")):
        mine = [r for r in rounds if r["path"] == name]
        for ax, key in ((ax_ttft, "ttft_ms"), (ax_total, "total_ms")):
            values = sorted(s[key] for r in mine for s in r["streams"])
            ax.plot(values, [(i + 1) / len(values) for i in range(len(values))], style, label=name)
        ax_tps.plot(range(1, len(mine) + 1), [r["tokens_per_s"] for r in mine], "o" + style, label=name)
        single = sorted(result["raw"]["single_request_ttft_ms"][name])
        ax_single.plot(single, [(i + 1) / len(single) for i in range(len(single))], style, label=name)
    ax_ttft.set(xlabel="time to first token at the caller (ms)", ylabel="fraction of streams",
                title="TTFT, all streams at once")
    ax_total.set(xlabel="request latency at the caller (ms)", ylabel="fraction of streams",
                 title="Total latency, all streams at once")
    ax_single.set(xlabel="time to first token at the caller (ms)", ylabel="fraction of requests",
                  title="TTFT, one request at a time")
    ax_tps.set(xlabel="round", ylabel="delivered tokens/s", title="Throughput per round")
    ax_tps.set_ylim(bottom=0)
    ax_tps.xaxis.get_major_locator().set_params(integer=True)
    for ax in (ax_ttft, ax_total, ax_single, ax_tps):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    config = result["config"]
    broker = {"kafka": "Apache Kafka", "tansu": "Tansu"}.get(config["broker"], "external broker")
    fig.suptitle(f"{config['streams']} concurrent streams, {config['new_tokens']} tokens each: "
                 f"through {broker} vs in-process, same engine, CPU")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ---- command line ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from consumers.config import ServeConfig

    parser = argparse.ArgumentParser(prog="lorastream bench kafka", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="FILE", default="docs/bench/kafka.json", help="results (default %(default)s)")
    parser.add_argument("--plot", metavar="FILE", default="docs/bench/kafka.png", help="PNG plot (default %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="short run: 1 warm-up and 1 measured round of 16 new tokens, 500 submits")
    parser.add_argument("--broker", choices=("kafka", "tansu"), default="kafka",
                        help="broker started for the run: Apache Kafka from $LORASTREAM_KAFKA_LIBS or "
                             ".cache/kafka/libs, or the embedded Tansu (default %(default)s)")
    parser.add_argument("--bootstrap-servers", help="use this running broker instead of starting one")
    parser.add_argument("--fetch-max-wait-ms", type=int,
                        help="consumers' fetch wait (default: 500 on Apache Kafka, 5 on Tansu, "
                             "$LORASTREAM_FETCH_MAX_WAIT_MS or 5 on --bootstrap-servers)")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per path, interleaved (default %(default)s)")
    parser.add_argument("--warmup-rounds", type=int, default=3,
                        help="unrecorded rounds per path first (default %(default)s)")
    parser.add_argument("--streams", type=int, default=64, help="concurrent streams (default %(default)s)")
    parser.add_argument("--new-tokens", type=int, default=64, help="max_new_tokens per request (default %(default)s)")
    parser.add_argument("--submit-count", type=int, default=2000,
                        help="concurrent submits per submit_rps sample (default %(default)s)")
    parser.add_argument("--probe-requests", type=int, default=8,
                        help="single requests per path and round, one at a time (default %(default)s)")
    parser.add_argument("--chunk-flush-ms", type=float, default=ServeConfig().chunk_flush_ms,
                        help="the service's token chunk flush interval (default %(default)s, as `lorastream serve`)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads (default %(default)s)")
    parser.add_argument("--workdir", help="where to build the model and adapters (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.warmup_rounds, args.new_tokens, args.submit_count, args.probe_requests = 1, 1, 16, 500, 4
    if min(args.rounds, args.streams, args.new_tokens, args.submit_count, args.probe_requests, args.threads) < 1:
        parser.error("--rounds, --streams, --new-tokens, --submit-count, --probe-requests and --threads must be >= 1")
    if args.warmup_rounds < 0:
        parser.error("--warmup-rounds must be >= 0")
    return args


@contextlib.contextmanager
def broker_for(args):
    """Yields (KafkaConfig, broker kind, broker pid or None)."""
    from streamer import KafkaConfig, KafkaJarBroker, TansuBroker

    def with_fetch_wait(kafka: KafkaConfig) -> KafkaConfig:
        if args.fetch_max_wait_ms is None:
            return kafka
        return dataclasses.replace(kafka, fetch_max_wait_ms=args.fetch_max_wait_ms)

    if args.bootstrap_servers:
        yield with_fetch_wait(KafkaConfig.from_env(args.bootstrap_servers)), "external", None
        return
    if args.broker == "tansu":
        broker = TansuBroker()
    else:
        broker = KafkaJarBroker(os.environ.get("LORASTREAM_KAFKA_LIBS") or ROOT / ".cache" / "kafka" / "libs")
    with broker:
        kafka = KafkaConfig(broker.bootstrap_servers, client_id="lorastream-bench",
                            fetch_max_wait_ms=FETCH_MAX_WAIT_MS[args.broker])
        yield with_fetch_wait(kafka), args.broker, broker.pid


def environment(args) -> dict:
    import aiokafka
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "aiokafka": aiokafka.__version__,
            "cpus": os.cpu_count(), "torch_threads": args.threads, "platform": platform.platform(),
            "loadavg_1m_start": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    env = environment(args)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="lorastream-bench-kafka-"))
    try:
        with broker_for(args) as (kafka, broker_kind, broker_pid):
            print(f"broker {broker_kind} at {kafka.bootstrap_servers} (fetch_max_wait_ms "
                  f"{kafka.fetch_max_wait_ms}); model and adapters in {workdir}", file=sys.stderr)
            samples = asyncio.run(run_benchmark(args, kafka, broker_pid, workdir))
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    env["loadavg_1m_end"] = os.getloadavg()[0]
    result = {
        "config": {**MODEL_SHAPE, "adapters": NUM_ADAPTERS, "adapter_rank": ADAPTER_RANK,
                   "adapter_targets": list(ADAPTER_TARGETS), "streams": args.streams, "new_tokens": args.new_tokens,
                   "rounds": args.rounds, "warmup_rounds": args.warmup_rounds, "probe_requests": args.probe_requests, "probe_new_tokens": PROBE_NEW_TOKENS,
                   "submit_count": args.submit_count, "chunk_flush_ms": args.chunk_flush_ms,
                   "fetch_max_wait_ms": kafka.fetch_max_wait_ms, "broker": broker_kind, "quick": args.quick},
        "environment": env,
        **summarize(samples),
    }
    print_table(result)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        save_plot(args.plot, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
