"""`lorastream bench kafka`: concurrent streams through Kafka against the same engine in-process.

One serving process holds the engine (a small Llama-shaped model with random weights and a few
LoRA adapters) and a running InferenceService, as `lorastream serve` does. Two paths share that
engine, in alternating rounds (A/B/B/A/...):

- kafka: a separate client process (as real clients are) streams 64 requests with LoraClient →
  requests topic → InferenceService → engine thread → reply topic → LoraClient;
- inprocess: the serving process submits the same prompts, adapters and max_new_tokens straight
  to the service's EngineThread (the service idles meanwhile).

Times are taken with time.perf_counter (CLOCK_MONOTONIC, one clock for every process on the
machine) where the caller sees them: TTFT from just before a request is sent to its first token,
total to its last record. CPU seconds of the serving, client and broker processes (and of the
serving process's event-loop thread alone) are recorded per round. `submit_rps` is measured in the
client process, on a requests topic nobody consumes: N concurrent `LoraClient.submit` calls until
the broker acknowledged every one.

This module runs the rounds and the command line; the parts are bench.kafka_workload (requests
and their timings), bench.kafka_client (the client process), bench.kafka_serving (the engine,
the service and the in-process path), bench.cpu_time and bench.kafka_results (summary, table,
plot).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from bench.cpu_time import CpuMeter, threads_cpu_s
from bench.kafka_client import ClientProcess
from bench.kafka_results import Samples, print_table, save_plot, summarize
from bench.kafka_serving import (
    ADAPTER_RANK,
    ADAPTER_TARGETS,
    MODEL_SHAPE,
    NUM_ADAPTERS,
    build_engine_thread,
    inprocess_probe,
    inprocess_round,
    running_service,
)
from bench.kafka_workload import INPROCESS, KAFKA, RoundResult, Workload, make_workload

ROOT = Path(__file__).resolve().parents[1]
PROBE_NEW_TOKENS = 4  # single-request probes measure TTFT only
FETCH_MAX_WAIT_MS = {"kafka": 500, "tansu": 5}  # long poll where the broker answers on arrival


async def run_round(
    path: str, workload: Workload, client: ClientProcess, runner, pids, profiler: cProfile.Profile | None = None
) -> RoundResult:
    meter, steps, threads = CpuMeter(pids), runner.num_steps, threads_cpu_s(pids["serving"])
    if path == KAFKA:
        if profiler is not None:  # the loop thread only: cProfile hooks the thread that enables it
            profiler.enable()
        try:
            wall_s, streams = await client.round(workload)
        finally:
            if profiler is not None:
                profiler.disable()
    else:
        wall_s, streams = await inprocess_round(runner, workload)
    used = meter.used_s()
    threads_used = {name: s - threads.get(name, 0.0) for name, s in threads_cpu_s(pids["serving"]).items()}
    return RoundResult(path, wall_s, streams, used, runner.num_steps - steps,
                       {name: s for name, s in threads_used.items() if s > 0})


async def run_benchmark(
    args, kafka, broker_pid: int | None, workdir: Path, profiler: cProfile.Profile | None = None
) -> Samples:
    from streamer import TopicNames, default_topic_specs, delete_topics, ensure_topics

    runner, adapter_ids = build_engine_thread(workdir, args)
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
            # the serving process's event loop runs here: every Kafka step of the service is on this thread
            pids = {"serving": os.getpid(), "serving_loop": (os.getpid(), threading.get_native_id()),
                    "serving_engine": (os.getpid(), runner.native_id), "client": client.pid, "broker": broker_pid}
            for index in range(args.warmup_rounds):  # the broker's JIT needs a few thousand requests
                print(f"warm-up {index + 1}/{args.warmup_rounds}", file=sys.stderr)
                for path in (KAFKA, INPROCESS):
                    await run_round(path, workload, client, runner, pids)
                await client.submit_rps(workload, args.submit_count)
            for index in range(args.rounds):
                for path in (KAFKA, INPROCESS) if index % 2 == 0 else (INPROCESS, KAFKA):
                    samples.rounds.append(await run_round(path, workload, client, runner, pids, profiler))
                    probe = client.probe(probe_workload) if path == KAFKA else inprocess_probe(runner, probe_workload)
                    samples.probes[path].extend(await probe)
                samples.submit_rps.append(await client.submit_rps(workload, args.submit_count))
                print(f"round {index + 1}/{args.rounds}: chunks per reply record so far {service.chunks_per_reply_record:.1f}, "
                      + ", ".join(f"{r.path} {r.tokens_per_s:.0f} tok/s ({r.engine_steps} steps)" for r in samples.rounds[-2:])
                      + f", submit {samples.submit_rps[-1]:.0f}/s", file=sys.stderr)
    finally:
        names = [s.name for s in default_topic_specs(topics) + submit_specs]
        with contextlib.suppress(Exception):  # an external broker keeps them until retention
            await delete_topics(kafka, names)
    return samples


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
    parser.add_argument("--profile", metavar="FILE",
                        help="cProfile the serving loop thread's CPU (time.thread_time) over the recorded Kafka "
                             "rounds and write pstats here (it slows the loop: figures of such a run are not kept)")
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
    from devbrokers import KafkaJarBroker
    from streamer import KafkaConfig, TansuBroker

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
            profiler = cProfile.Profile(time.thread_time) if args.profile else None
            samples = asyncio.run(run_benchmark(args, kafka, broker_pid, workdir, profiler))
            if profiler is not None:
                profiler.dump_stats(args.profile)
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
