"""`lorastream bench cache`: the adapter cache tiers — cold loads, hit cost, and a Zipf workload under a device budget.

On the engine benchmark's ~100M Llama-shaped model (random weights, bench/engine.py's builders):
(1) cold load: a rank-16 adapter on all 7 projections, PEFT safetensors on local disk, from
prefetch to ready in the device tier (store checkout + read/validate + host→device copy), with
the files dropped from the page cache first (and once more with them in it), wall clock; (2) the cache's
per-request cost on a device hit, and on a device miss served from the host tier; (3) a
closed-loop stream of short requests (32 in flight) over 1000 LoRA-Land-style adapters (rank 8 on
q_proj, v_proj) drawn from Zipf(1.1), with a device budget of 64 adapters against every adapter
resident, same request sequence, rounds interleaved; and a sweep of the device budget. The host
tier is warm in every run (all adapters loaded once before timing), so the sweep isolates the
device tier. Targets: cold_load_ms_p50 at most 20 ms; zipf_over_resident at least 0.8.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.engine import ALL_PROJECTIONS, MODEL_SHAPE, PROMPT, write_adapters
from lorastream.stats import percentile

TARGETS = {"cold_load_ms_p50": 20.0, "zipf_over_resident": 0.8}
LOWER_IS_BETTER = {"cold_load_ms_p50"}
ZIPF_S = 1.1
MAIN_BUDGET = 64  # adapters' worth of device bytes in the headline comparison


def drop_page_cache(directory: Path) -> None:
    """Ask the kernel to forget the cached pages of every file in `directory` (needs no privileges)."""
    for path in directory.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def zipf_sequence(adapter_ids: list[str], count: int, s: float, seed: int) -> list[str]:
    """`count` adapter ids drawn with P(rank k) ~ 1/k^s; which id has which rank is shuffled."""
    rng = random.Random(seed)
    ranked = list(adapter_ids)
    rng.shuffle(ranked)
    weights = [1.0 / (k + 1) ** s for k in range(len(ranked))]
    return rng.choices(ranked, weights, k=count)


def make_engine(model_dir: Path, root: Path, args, device_cache_bytes: int | None):
    from gpu_engine.config import EngineConfig
    from gpu_engine.engine import Engine

    config = EngineConfig(
        str(model_dir), str(root), dtype=args.dtype, device=args.device, max_batch_size=args.batch_size,
        max_model_len=64 + args.new_tokens, device_cache_bytes=device_cache_bytes,
    )
    return Engine(config)


def measure_cold_loads(engine, adapter_ids: list[str], root: Path, drop_cache: bool) -> dict[str, float]:
    """Wall time of prefetch → ready on the device, per adapter never seen by this engine."""
    totals, host_s, device_s = [], [], []
    for adapter_id in adapter_ids:
        if drop_cache:
            drop_page_cache(root / adapter_id)
        before = engine.cache_stats.snapshot()
        started = time.perf_counter()
        engine.load_adapter(adapter_id, hold=False)
        totals.append(time.perf_counter() - started)
        after = engine.cache_stats.snapshot()
        host_s += after["host"].load_seconds[len(before["host"].load_seconds):]
        device_s += after["device"].load_seconds[len(before["device"].load_seconds):]
    ms = [1000 * t for t in totals]
    return {
        "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99), "mean_ms": statistics.fmean(ms),
        "fetch_and_read_ms_p50": 1000 * percentile(host_s, 50), "device_copy_ms_p50": 1000 * percentile(device_s, 50),
        "adapter_bytes": engine.adapter_cache.device.size((adapter_ids[0], 0)), "count": len(ms), "samples_ms": ms,
    }


def measure_hit_path(engine, resident_id: str, evicted_ids: list[str], repeats: int) -> dict[str, float]:
    """The cache's own cost per request: prefetch + accept + admit + release, on a device hit and on
    a device miss served from the host tier (copy into a slot, evicting another). `evicted_ids`
    are host-resident and more than the device budget holds, so cycling through them always misses."""
    from gpu_engine.seq_state import SeqState
    from gpu_engine.types import GenerationRequest

    cache = engine.adapter_cache

    def one(adapter_id: str, i: int) -> float:
        started = time.perf_counter()
        ref = cache.resolve(adapter_id)
        cache.prefetch(ref)
        seq = SeqState.from_prompt(GenerationRequest(f"h{i}", PROMPT, adapter_id), [1, 2, 3], adapter_ref=ref)
        cache.accept(seq)
        assert cache.admit(seq), "a host-resident adapter must be admitted"
        cache.release(seq)
        return 1e6 * (time.perf_counter() - started)

    engine.load_adapter(resident_id, hold=False)
    hits = [one(resident_id, i) for i in range(repeats)]
    misses = [one(evicted_ids[i % len(evicted_ids)], i) for i in range(repeats)]
    return {"device_hit_us_p50": statistics.median(hits), "device_miss_host_hit_us_p50": statistics.median(misses)}


def run_stream(engine, sequence: list[str], new_tokens: int, in_flight: int, clock) -> dict[str, float]:
    """Serve `sequence` as a closed loop of `in_flight` requests; tokens per second of the clock."""
    from gpu_engine.types import GenerationRequest, SamplingParams

    params = SamplingParams(max_new_tokens=new_tokens, ignore_eos=True)
    before = engine.cache_stats.snapshot()["device"]
    pending = iter(enumerate(sequence))
    outstanding = tokens = 0
    started = clock()
    while True:
        while outstanding < in_flight and (item := next(pending, None)) is not None:
            i, adapter_id = item
            engine.add_request(GenerationRequest(f"z{i}", PROMPT, adapter_id, params))
            outstanding += 1
        if outstanding == 0:
            break
        for event in engine.step():
            tokens += len(event.token_ids)
            if event.is_final:
                assert event.error_code is None, event
                outstanding -= 1
    elapsed = clock() - started
    after = engine.cache_stats.snapshot()["device"]
    hits, misses = after.hits - before.hits, after.misses - before.misses
    return {
        "tokens_per_s": tokens / elapsed, "device_hit_rate": hits / max(1, hits + misses),
        "device_misses": misses, "evictions": after.evictions - before.evictions, "tokens": tokens,
        "seconds": elapsed,
    }


def warm(engine, adapter_ids: list[str]) -> None:
    """Load every adapter once (host tier full, device tier holding whatever its budget keeps)."""
    for adapter_id in adapter_ids:
        engine.load_adapter(adapter_id, hold=False)


def summarize(zipf: dict[str, dict[str, float]], cold_p50_ms: float) -> tuple[dict[str, float], dict[str, bool]]:
    ratios = {"zipf_over_resident": zipf[f"budget_{MAIN_BUDGET}"]["tokens_per_s"] / zipf["resident"]["tokens_per_s"]}
    values = {**ratios, "cold_load_ms_p50": cold_p50_ms}
    met = {
        name: (values[name] <= target if name in LOWER_IS_BETTER else values[name] >= target)
        for name, target in TARGETS.items()
    }
    return ratios, met


def print_table(result: dict) -> None:
    cold = result["cold_load"]
    print(f"{'cold load (ms)':<28}{'p50':>8}{'p99':>8}{'read':>8}{'copy':>8}")
    for name, row in cold.items():
        print(f"{name:<28}{row['p50_ms']:>8.2f}{row['p99_ms']:>8.2f}"
              f"{row['fetch_and_read_ms_p50']:>8.2f}{row['device_copy_ms_p50']:>8.2f}")
    print()
    for name, value in result["hit_path"].items():
        print(f"{name:<36}{value:>10.4g}")
    print()
    print(f"{'device budget (adapters)':<28}{'tokens/s':>10}{'hit rate':>10}{'evictions':>10}")
    for budget, row in result["budget_sweep"].items():
        print(f"{budget:<28}{row['tokens_per_s']:>10.1f}{row['device_hit_rate']:>10.3f}{row['evictions']:>10}")
    print()
    print(f"{'figure':<28}{'value':>10}{'target':>10}  met")
    values = {**result["ratios"], "cold_load_ms_p50": result["cold_load_ms_p50"]}
    for name, target in TARGETS.items():
        sign = "<=" if name in LOWER_IS_BETTER else ">="
        print(f"{name:<28}{values[name]:>10.3f}{sign:>4}{target:>6.2f}  {'yes' if result['met'][name] else 'NO'}")


def save_plot(path: str, sweep: dict[str, dict[str, float]], resident: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = [int(b) for b in sweep]
    fig, (tps_ax, hit_ax) = plt.subplots(1, 2, figsize=(10, 4))
    tps_ax.plot(budgets, [sweep[str(b)]["tokens_per_s"] for b in budgets], "o-", label="device budget")
    tps_ax.axhline(resident["tokens_per_s"], linestyle="--", color="gray", label="every adapter resident")
    tps_ax.set_ylabel("tokens/s")
    tps_ax.set_ylim(0, 1.15 * max(resident["tokens_per_s"], *(r["tokens_per_s"] for r in sweep.values())))
    hit_ax.plot(budgets, [sweep[str(b)]["device_hit_rate"] for b in budgets], "s-", color="tab:green")
    hit_ax.set_ylabel("device tier hit rate")
    hit_ax.set_ylim(0, 1.05)
    for ax in (tps_ax, hit_ax):
        ax.set_xscale("log", base=2)
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.set_xlabel("device budget (adapters' worth of bytes)")
    tps_ax.legend(fontsize=8)
    fig.suptitle(f"Zipf({ZIPF_S}) over {max(budgets)} LoRA-Land adapters, 32 in flight, ~100M Llama, CPU")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lorastream bench cache", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE")
    parser.add_argument("--plot", metavar="FILE", help="PNG of tokens/s and hit rate vs device budget "
                        "(default: next to --json)")
    parser.add_argument("--quick", action="store_true", help="short run: 200 adapters, 96 requests, 8 tokens")
    parser.add_argument("--adapters", type=int, default=1000, help="LoRA-Land adapters in the Zipf workload")
    parser.add_argument("--requests", type=int, default=256, help="requests per Zipf run (default 256)")
    parser.add_argument("--new-tokens", type=int, default=16, help="tokens generated per request (default 16)")
    parser.add_argument("--batch-size", type=int, default=32, help="requests in flight (default 32)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the headline pair (default 2)")
    parser.add_argument("--cold-adapters", type=int, default=24, help="heavy adapters per cold-load set")
    parser.add_argument("--budgets", default="8,16,32,128", help="other device budgets to sweep, in adapters")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="cpu",
                        help="the engine thread's CPU time (needs --threads 1; the default) or wall time")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="where to build the model and adapters (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.quick:
        args.adapters, args.requests, args.new_tokens, args.rounds = 200, 96, 8, 1
        args.cold_adapters, args.budgets = 8, "16"
    try:
        args.budget_list = sorted({int(b) for b in args.budgets.split(",") if b} | {MAIN_BUDGET})
    except ValueError:
        parser.error("--budgets is a comma-separated list of integers")
    if args.adapters <= MAIN_BUDGET or min(args.budget_list) < 1 or args.cold_adapters < 2:
        parser.error(f"--adapters > {MAIN_BUDGET}, budgets >= 1 and --cold-adapters >= 2 are required")
    if args.rounds < 1 or args.requests < 1 or args.new_tokens < 1 or args.batch_size < 1:
        parser.error("--rounds, --requests, --new-tokens and --batch-size must be >= 1")
    if args.clock == "cpu" and (args.threads != 1 or args.device != "cpu"):
        parser.error("--clock cpu measures one CPU thread: use it with --threads 1 on the cpu device")
    return args


def run(args, workdir: Path) -> dict:
    from gpu_engine.tiny import build_tiny_model

    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    print(f"building the model and {args.adapters + 2 * args.cold_adapters} adapters in {workdir} ...", file=sys.stderr)
    model_dir = build_tiny_model(workdir / "model", **MODEL_SHAPE)
    root = workdir / "adapters"
    heavy, heavy_params = write_adapters(model_dir, root, "heavy", 2 * args.cold_adapters, 16, ALL_PROJECTIONS, seed=2)
    os.sync()  # no writeback of the files just written competes with the reads measured

    print("cold loads ...", file=sys.stderr)
    # a device budget that holds them all: the bank reserves its slots up front, as in production
    # (with no budget it grows by doubling, and each growth copies the whole bucket once)
    element_bytes = torch.empty(0, dtype=getattr(torch, args.dtype)).element_size()
    cold_engine = make_engine(model_dir, root, args, len(heavy) * heavy_params * element_bytes)
    cold_engine.load_adapter(heavy[-1], hold=False)  # first use: worker threads start, code paths warm up
    cold = {
        "disk (page cache dropped)": measure_cold_loads(cold_engine, heavy[: args.cold_adapters], root, True),
        "page cache": measure_cold_loads(cold_engine, heavy[args.cold_adapters : -1], root, False),
    }
    del cold_engine
    gc.collect()
    land, _ = write_adapters(model_dir, root, "land", args.adapters, 8, ("q_proj", "v_proj"), seed=1)
    sequence = zipf_sequence(land, args.requests, ZIPF_S, args.seed)
    resident = make_engine(model_dir, root, args, None)
    warm(resident, land)
    land_bytes = resident.adapters.device.size((land[0], 0))

    def budget_engine(adapters: int):
        engine = make_engine(model_dir, root, args, adapters * land_bytes)
        warm(engine, land)
        return engine

    print("hit path, Zipf stream: budget vs resident ...", file=sys.stderr)
    main_budget = budget_engine(MAIN_BUDGET)
    hit_path = measure_hit_path(main_budget, land[-1], land[: 2 * MAIN_BUDGET - 1], repeats=200)
    pair = {"resident": resident, f"budget_{MAIN_BUDGET}": main_budget}
    for engine in pair.values():  # warm-up run, untimed
        run_stream(engine, sequence[: 2 * args.batch_size], args.new_tokens, args.batch_size, clock)
    samples: dict[str, list[dict]] = {name: [] for name in pair}
    for round_index in range(args.rounds):
        print(f"round {round_index + 1}/{args.rounds}", file=sys.stderr)
        order = list(pair) if round_index % 2 == 0 else list(reversed(pair))
        for name in order:
            samples[name].append(run_stream(pair[name], sequence, args.new_tokens, args.batch_size, clock))
    zipf = {name: max(runs, key=lambda r: r["tokens_per_s"]) for name, runs in samples.items()}
    del pair, main_budget, resident
    gc.collect()

    sweep = {}
    for adapters in args.budget_list:
        if adapters == MAIN_BUDGET:
            sweep[str(adapters)] = zipf[f"budget_{MAIN_BUDGET}"]
            continue
        print(f"Zipf stream: device budget {adapters} adapters ...", file=sys.stderr)
        engine = budget_engine(adapters)
        run_stream(engine, sequence[: 2 * args.batch_size], args.new_tokens, args.batch_size, clock)
        sweep[str(adapters)] = run_stream(engine, sequence, args.new_tokens, args.batch_size, clock)
        del engine
        gc.collect()
    sweep[str(args.adapters)] = zipf["resident"]

    cold_disk = cold["disk (page cache dropped)"]
    ratios, met = summarize(zipf, cold_disk["p50_ms"])
    main = zipf[f"budget_{MAIN_BUDGET}"]
    # what the device tier's misses cost that run: each one's measured host→device placement time
    hit_path[f"budget_{MAIN_BUDGET}_miss_time_fraction"] = (
        main["device_misses"] * hit_path["device_miss_host_hit_us_p50"] / 1e6 / main["seconds"]
    )
    return {
        "config": {**MODEL_SHAPE, "zipf_s": ZIPF_S, "adapters": args.adapters, "requests": args.requests,
                   "new_tokens": args.new_tokens, "in_flight": args.batch_size, "rounds": args.rounds,
                   "main_budget_adapters": MAIN_BUDGET, "land_adapter_bytes": land_bytes,
                   "heavy_adapter_bytes": cold_disk["adapter_bytes"], "threads": args.threads, "clock": args.clock,
                   "cold_load_clock": "wall", "device": args.device, "dtype": args.dtype, "seed": args.seed,
                   "torch": torch.__version__},
        "cold_load_ms_p50": cold_disk["p50_ms"],
        "cold_load_ms_p99": cold_disk["p99_ms"],
        "cold_load": cold,
        "hit_path": hit_path,
        "zipf": zipf,
        "budget_sweep": sweep,
        "samples": samples,
        "ratios": ratios,
        "targets": TARGETS,
        "met": met,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # random weights make subnormal floats; real CPUs crawl on them
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="lorastream-bench-cache-"))
    try:
        result = run(args, workdir)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    plot = args.plot or (str(Path(args.json).with_suffix(".png")) if args.json else None)
    if plot:
        save_plot(plot, result["budget_sweep"], result["zipf"]["resident"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
