"""`lorastream bench gpu`: multi-LoRA decode throughput on a CUDA GPU (issue 3 §7), for a device run.

A ~1B-parameter Llama-shaped model with random weights (hidden 2048, intermediate 5632, 22 layers,
32 heads, 4 KV heads; a 512-token vocabulary, so the LM head is small), bf16, decoding a batch of
128 sequences with the engine's default backend on CUDA (the Triton kernels). Measured in one run,
rounds interleaved: base only; LoRA-Land-style adapters (rank 8 on q_proj, v_proj) with 1, 32 and
128 distinct adapters in the batch; heavy adapters (rank 16 on all 7 projections) with 1 and 32.
Goal: 128 distinct LoRA-Land adapters at ≥ 0.9 of the base-only speed (`land_128_over_base`).
Before the rounds (issue 13 §4): `capacity`, sequences running at once under one KV budget
(16 slots of 4,096 positions, its GiB for this model) with the paged cache and with slots, and
`step_ms`, one decode step at the full batch with CUDA graphs and eagerly (base only and 32
distinct adapters; `graph` is null where graphs are off, e.g. on the CPU).

The JSON file is rewritten after the build, after the warm-up and after every round (`progress`
says how far it got), so a run stopped by a timeout keeps every number measured until then.
`--time-budget-s` starts no round that the last one's duration says would end past the budget.
The environment record holds the versions (torch, triton, transformers, peft, bitsandbytes),
GPU, driver, and the SDPA kernels the prefill and the decode step called (read with the
profiler: flash, mem-efficient, cudnn or math).

`--shape tiny --device cpu --dtype float32` runs the same code in seconds (the suite does, to
keep this script working between device runs). bench/gpu_check.sh wraps it with the Triton tests.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.engine import ALL_PROJECTIONS, PROMPT, OursRunner, write_adapters
from bench.gpu_env import collect

SHAPES = {
    "1b": {"hidden": 2048, "intermediate": 5632, "layers": 22, "heads": 32, "kv_heads": 4, "init_std": 0.02},
    "tiny": {"hidden": 64, "intermediate": 128, "layers": 2, "heads": 4, "kv_heads": 2, "init_std": 0.02},
}
GOAL = {"land_128_over_base": 0.9}


def parse_distinct(text: str) -> list[int]:
    try:
        values = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError("distinct adapter counts must be >= 1")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lorastream bench gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE")
    parser.add_argument("--plot", metavar="FILE", help="PNG of tokens/s against distinct adapters")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="1b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--batch-size", type=int, default=128, help="sequences decoded together (default 128)")
    parser.add_argument("--distinct", type=parse_distinct, default=[1, 32, 128],
                        help="distinct LoRA-Land adapters per batch (default 1,32,128)")
    parser.add_argument("--heavy-distinct", type=parse_distinct, default=[1, 32],
                        help="distinct heavy adapters per batch (default 1,32)")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated per sequence (default 64)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--workdir", help="where to build the model and adapters (default: a temp dir)")
    parser.add_argument("--time-budget-s", type=float, metavar="S",
                        help="start no round that would end more than S seconds after the start (default: none)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.new_tokens < 2 or args.batch_size < 1:
        parser.error("--rounds >= 1, --new-tokens >= 2 and --batch-size >= 1 are required")
    if args.time_budget_s is not None and args.time_budget_s <= 0:
        parser.error("--time-budget-s must be > 0")
    if max(args.distinct + args.heavy_distinct) > args.batch_size:
        parser.error("a distinct adapter count cannot exceed --batch-size")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA GPU (use --device cpu --shape tiny to try it here)")
    args.clock = "wall"
    return args


def count_params(model_dir: Path) -> int:
    """Parameters in a saved checkpoint, read from the safetensors headers."""
    from safetensors import safe_open

    total = 0
    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            total += sum(math.prod(handle.get_slice(name).get_shape()) for name in handle.keys())
    return total


def build(workdir: Path, args) -> tuple[OursRunner, dict[str, list[str]], dict[str, object]]:
    from gpu_engine.tiny import build_tiny_model

    started = time.perf_counter()
    model_dir = build_tiny_model(workdir / "model", **SHAPES[args.shape])
    root = workdir / "adapters"
    land, land_params = write_adapters(model_dir, root, "land", max(args.distinct), 8, ("q_proj", "v_proj"), seed=1)
    heavy, heavy_params = write_adapters(model_dir, root, "heavy", max(args.heavy_distinct), 16, ALL_PROJECTIONS, seed=2)
    ours = OursRunner(model_dir, root, args, land + heavy, time.perf_counter)
    num_params = count_params(model_dir)
    info = {
        "num_params": num_params,
        "land_adapter_params": land_params,
        "heavy_adapter_params": heavy_params,
        "lora_backend": ours.engine.lora_backend,
        "build_s": time.perf_counter() - started,
    }
    return ours, {"land": land, "heavy": heavy}, info


def workloads(ours: OursRunner, adapters: dict[str, list[str]], args) -> dict[str, object]:
    batch, n = args.batch_size, args.new_tokens

    def spread(names: list[str], distinct: int) -> list[str]:
        return [names[i % distinct] for i in range(batch)]

    runs = {"base": lambda: ours.tokens_per_s([None] * batch, n)}
    for d in args.distinct:
        runs[f"land_{d}"] = lambda d=d: ours.tokens_per_s(spread(adapters["land"], d), n)
    for d in args.heavy_distinct:
        runs[f"heavy_{d}"] = lambda d=d: ours.tokens_per_s(spread(adapters["heavy"], d), n)
    return runs


def measure(runs: dict[str, object], rounds: int, deadline: float | None, on_round, clock=time.perf_counter) -> None:
    """Every workload once per round, in alternating order, after one untimed warm-up pass.

    `on_round(samples, warmup_s, stopped)` is called after the warm-up and after every round;
    no round starts that the previous one's duration (on `clock`) says would end after `deadline`.
    """
    started = clock()
    for run in runs.values():
        run()
    last_s = clock() - started
    samples: dict[str, list[float]] = {name: [] for name in runs}
    on_round(samples, last_s, None)
    names = list(runs)
    for index in range(rounds):
        if deadline is not None and clock() + last_s > deadline:
            on_round(samples, None, f"time budget: {index} of {rounds} rounds fit")
            return
        started = clock()
        for name in names if index % 2 == 0 else reversed(names):
            samples[name].append(runs[name]())
        last_s = clock() - started
        print(f"round {index + 1}/{rounds} ({last_s:.0f} s): "
              + ", ".join(f"{k} {v[-1]:.0f}" for k, v in samples.items()), flush=True)
        on_round(samples, None, None)


def attention_kernels(ours: OursRunner, adapters: list[str | None]) -> dict[str, dict[str, int]]:
    """The SDPA kernels (aten ops and calls) of one prefill step and one decode step of this batch."""
    from torch.profiler import ProfilerActivity, profile

    from gpu_engine.types import GenerationRequest, SamplingParams

    engine = ours.engine
    params = SamplingParams(max_new_tokens=2, ignore_eos=True)
    for i, adapter in enumerate(adapters):
        engine.add_request(GenerationRequest(f"attention-probe-{i}", PROMPT, adapter, params))
    found = {}
    for phase in ("prefill", "decode"):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            engine.step()
        found[phase] = {event.key: event.count for event in prof.key_averages()
                        if event.key.startswith("aten::_") and "attention" in event.key}
    while engine.has_work():
        engine.step()
    return found


def step_ms(ours: OursRunner, adapters: list[str | None], steps: int = 12) -> dict[str, float | None]:
    """Median wall ms of one decode step of this batch, replayed from CUDA graphs and eagerly."""
    from gpu_engine.types import GenerationRequest, SamplingParams

    engine = ours.engine
    graphs = engine.decode_graphs
    found: dict[str, float | None] = {"graph": None}
    for mode in ("graph", "eager") if graphs is not None else ("eager",):
        engine.decode_graphs = graphs if mode == "graph" else None
        params = SamplingParams(max_new_tokens=steps + 3, ignore_eos=True)
        for i, adapter in enumerate(adapters):
            engine.add_request(GenerationRequest(f"step-{mode}-{i}", PROMPT, adapter, params))
        engine.step()  # prefill
        engine.step()  # first decode: captures this shape's graph
        times = []
        while engine.has_work():
            started = time.perf_counter()
            engine.step()  # ends by reading the sampled tokens: the device work is done
            times.append(time.perf_counter() - started)
        found[mode] = 1000 * statistics.median(times[:-1])
    engine.decode_graphs = graphs
    if graphs is not None:
        found["graph_captures"] = graphs.num_captures
    return found


def kv_capacity(ours: OursRunner) -> dict[str, float]:
    """Paged vs slot capacity at one KV budget (bench/engine_paged.py), with its bytes for this model."""
    from bench import engine_paged
    from gpu_engine.kv_cache import kv_bytes_per_position

    found = engine_paged.capacity(num_requests=1000)
    found["kv_budget_gib"] = found["kv_budget_positions"] * kv_bytes_per_position(
        ours.engine.spec, ours.engine.model.dtype) / 2**30
    found["paged_over_slot"] = found["paged_running"] / found["slot_running"]
    return found


def summarize(medians: dict[str, float]) -> dict[str, float]:
    base = medians["base"]
    return {f"{name}_over_base": value / base for name, value in medians.items() if name != "base"}


def save_plot(path: str, medians: dict[str, float], args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(args.distinct, [medians[f"land_{d}"] for d in args.distinct], "o-", label="LoRA-Land r8 q,v")
    ax.plot(args.heavy_distinct, [medians[f"heavy_{d}"] for d in args.heavy_distinct], "s-", label="heavy r16, 7 proj")
    ax.axhline(medians["base"], linestyle="--", color="gray", label="base only")
    ax.set_xscale("log", base=2)
    ticks = sorted(set(args.distinct + args.heavy_distinct))
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel("distinct adapters in the batch")
    ax.set_ylabel("decode tokens/s")
    ax.set_ylim(0, 1.15 * max(medians.values()))
    ax.set_title(f"Multi-LoRA decode, batch {args.batch_size}, {args.shape} Llama, {args.dtype}, {args.device}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_json(path: str, result: dict[str, object]) -> None:
    """Replace `path` whole (a run killed mid-write leaves the previous version, never half a file)."""
    partial = f"{path}.partial"
    Path(partial).write_text(json.dumps(result, indent=1) + "\n")
    os.replace(partial, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    deadline = None if args.time_budget_s is None else started + args.time_budget_s
    result: dict[str, object] = {
        "config": {key: value for key, value in vars(args).items() if key not in ("json", "plot")},
        "shape": SHAPES[args.shape],
        "environment": collect(),
        "goal": GOAL,
        "progress": {"phase": "building", "rounds_done": 0, "rounds_planned": args.rounds, "stopped": None},
    }

    def save(phase: str, **progress) -> None:
        result["progress"] = {**result["progress"], "phase": phase, "elapsed_s": time.perf_counter() - started,
                              **progress}
        if args.json:
            write_json(args.json, result)

    def on_round(samples: dict[str, list[float]], warmup_s: float | None, stopped: str | None) -> None:
        done = min(len(values) for values in samples.values())
        if warmup_s is not None:
            result["info"]["warmup_s"] = warmup_s
        if done:
            result["tokens_per_s_samples"] = samples
            result["tokens_per_s_median"] = {name: statistics.median(values) for name, values in samples.items()}
            result["ratios"] = summarize(result["tokens_per_s_median"])
        save("warmed up" if warmup_s is not None else "stopped" if stopped else "measuring",
             rounds_done=done, stopped=stopped)

    save("building")
    with tempfile.TemporaryDirectory(prefix="lorastream-bench-gpu-") as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        print(f"building the {args.shape} model and adapters in {workdir} ...", flush=True)
        ours, adapters, info = build(workdir, args)
        result["info"] = info
        print(f"{info['num_params'] / 1e6:,.1f}M parameters, LoRA backend {info['lora_backend']}, "
              f"built in {info['build_s']:.0f} s", flush=True)
        save("built")
        batch = [adapters["land"][i % max(args.distinct)] for i in range(args.batch_size)]
        result["environment"]["attention_kernels"] = attention_kernels(ours, batch)
        print(f"attention kernels: {result['environment']['attention_kernels']}", flush=True)
        result["capacity"] = kv_capacity(ours)
        print(f"capacity under {result['capacity']['kv_budget_gib']:.1f} GiB of KV: paged "
              f"{result['capacity']['paged_running']:.0f}, slots {result['capacity']['slot_running']:.0f}", flush=True)
        save("capacity")
        land_32 = [adapters["land"][i % min(32, max(args.distinct))] for i in range(args.batch_size)]
        result["step_ms"] = {"base": step_ms(ours, [None] * args.batch_size), "land_32": step_ms(ours, land_32)}
        print(f"decode step ms (graph / eager): {result['step_ms']}", flush=True)
        save("step times")
        measure(workloads(ours, adapters, args), args.rounds, deadline, on_round)
    medians = result.get("tokens_per_s_median")
    if not medians:
        save("stopped", stopped=result["progress"]["stopped"] or "no round completed")
        print(f"no round completed: {result['progress']['stopped']}", file=sys.stderr)
        return 1
    ratios = result["ratios"]
    print(f"\n{'workload':<12}{'tokens/s':>12}{'vs base':>10}")
    for name, value in medians.items():
        print(f"{name:<12}{value:>12.0f}{value / medians['base']:>10.3f}")
    for name, goal in GOAL.items():
        if name in ratios:
            print(f"\n{name} = {ratios[name]:.3f} (goal >= {goal}: {'met' if ratios[name] >= goal else 'MISSED'})")
    save("done" if result["progress"]["stopped"] is None else "stopped")
    if args.plot:
        save_plot(args.plot, medians, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
