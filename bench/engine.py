"""`lorastream bench engine`: multi-LoRA decode throughput of our engine against transformers and PEFT.

A ~100M-parameter Llama-shaped model with random weights is built locally, with LoRA-Land-style
adapters (r=8 on q_proj, v_proj) and heavy ones (r=16 on all 7 projections). Every workload
decodes a batch of sequences; all workloads run once per round, rounds interleaved. The best
round per workload is the headline figure (noise on a shared machine only ever slows a run
down), the median is reported beside it. Only ratios measured in the same run are compared.
By default one thread runs and its CPU time is the clock, which other jobs on a shared machine
do not inflate; on a dedicated machine `--threads N --clock wall` measures wall time.
In the same run: sequences running at once under one KV budget, paged ÷ slot cache
(`ratios.paged_over_slot_capacity`), and host µs per decode step at batch 128 on a tiny model,
eager and static (`host_step_us`; see bench/engine_paged.py).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench import engine_paged

ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
MODEL_SHAPE = {"hidden": 1024, "intermediate": 2816, "layers": 8, "heads": 16, "kv_heads": 8, "init_std": 0.02}
PROMPT = "The quick model serves many adapters over one base"
TARGETS = {
    "landr8_32_over_base": 0.90,
    "heavy_fraction_of_byte_limit": 0.85,
    "ours32_over_peft32": 3.0,
    "ours_base_over_hf_base": 1.0,
    "paged_over_slot_capacity": 4.0,
}
HOST_STEP_TARGET_US = 400.0  # host_step_us.static at batch 128: at most


def write_adapters(
    model_dir: Path, root: Path, prefix: str, count: int, rank: int, targets, seed: int
) -> tuple[list[str], int]:
    """One adapter made by PEFT, the rest with the same files and fresh random tensors.

    Returns the adapter ids and the number of LoRA parameters of each.
    """
    from safetensors.torch import load_file, save_file

    from gpu_engine.tiny import build_tiny_adapter

    first = build_tiny_adapter(model_dir, root / f"{prefix}0", r=rank, alpha=2 * rank, target_modules=targets,
                               seed=seed, b_std=0.01)
    tensors = load_file(str(first / "adapter_model.safetensors"))
    generator = torch.Generator().manual_seed(seed)
    for i in range(1, count):
        out = root / f"{prefix}{i}"
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(first / "adapter_config.json", out / "adapter_config.json")
        fresh = {k: torch.randn(v.shape, generator=generator) * 0.01 for k, v in tensors.items()}
        save_file(fresh, str(out / "adapter_model.safetensors"))
    return [f"{prefix}{i}" for i in range(count)], sum(v.numel() for v in tensors.values())


class OursRunner:
    def __init__(self, model_dir: Path, adapter_root: Path, args, adapters: list[str], clock) -> None:
        from gpu_engine.config import EngineConfig
        from gpu_engine.engine import Engine

        config = EngineConfig(str(model_dir), str(adapter_root), dtype=args.dtype, device=args.device,
                              max_batch_size=args.batch_size, max_model_len=64 + args.new_tokens)
        self.engine = Engine(config)
        self.clock = clock
        for adapter_id in adapters:
            self.engine.load_adapter(adapter_id)

    def tokens_per_s(self, adapters: list[str | None], new_tokens: int) -> float:
        """Decode throughput: tokens after each sequence's first, over the time after the prefill step."""
        from gpu_engine.types import GenerationRequest, SamplingParams

        params = SamplingParams(max_new_tokens=new_tokens, ignore_eos=True)
        for i, adapter in enumerate(adapters):
            self.engine.add_request(GenerationRequest(f"b{i}", PROMPT, adapter, params))
        self.engine.step()  # prefill + first token of every sequence
        start, tokens = self.clock(), 0
        while self.engine.has_work():
            tokens += sum(len(e.token_ids) for e in self.engine.step())
        return tokens / (self.clock() - start)


def hf_tokens_per_s(model, input_ids: torch.Tensor, new_tokens: int, clock, **generate_kwargs) -> float:
    """Decode throughput of `generate`, timed between the first and the last generated token."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    class TokenTimes(StoppingCriteria):
        def __init__(self) -> None:
            self.times: list[float] = []

        def __call__(self, ids, scores, **kwargs):
            self.times.append(clock())
            return torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)

    token_times = TokenTimes()
    with torch.inference_mode():
        model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                       max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0,
                       stopping_criteria=StoppingCriteriaList([token_times]), **generate_kwargs)
    times = token_times.times
    return input_ids.shape[0] * (len(times) - 1) / (times[-1] - times[0])


def build_workloads(workdir: Path, args):
    """Model, adapters and one zero-argument callable per workload."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gpu_engine.tiny import build_tiny_model

    model_dir = build_tiny_model(workdir / "model", **MODEL_SHAPE)
    root = workdir / "adapters"
    land, _ = write_adapters(model_dir, root, "land", 32, 8, ("q_proj", "v_proj"), seed=1)
    heavy, heavy_params = write_adapters(model_dir, root, "heavy", 32, 16, ALL_PROJECTIONS, seed=2)
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    ours = OursRunner(model_dir, root, args, land + heavy, clock)
    dtype, device = getattr(torch, args.dtype), ours.engine.model.device
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    input_ids = tokenizer([PROMPT] * args.batch_size, return_tensors="pt").input_ids.to(device)
    hf = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype).to(device).eval()
    peft_base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype).to(device)
    peft = PeftModel.from_pretrained(peft_base, str(root / heavy[0]), adapter_name=heavy[0])
    for name in heavy[1:]:
        peft.load_adapter(str(root / name), adapter_name=name)
    peft.eval()
    n, batch = args.new_tokens, args.batch_size

    def spread(names: list[str], distinct: int) -> list[str]:
        return [names[i % distinct] for i in range(batch)]

    workloads = {
        "ours_base": lambda: ours.tokens_per_s([None] * batch, n),
        "hf_base": lambda: hf_tokens_per_s(hf, input_ids, n, clock),
        "ours_landr8_32": lambda: ours.tokens_per_s(spread(land, 32), n),
        "ours_heavy_32": lambda: ours.tokens_per_s(spread(heavy, 32), n),
        "peft_32": lambda: hf_tokens_per_s(peft, input_ids, n, clock, adapter_names=spread(heavy, 32)),
    }
    for distinct in (1, 8):
        workloads[f"ours_heavy_{distinct}"] = lambda d=distinct: ours.tokens_per_s(spread(heavy, d), n)
        workloads[f"peft_{distinct}"] = lambda d=distinct: hf_tokens_per_s(
            peft, input_ids, n, clock, adapter_names=spread(heavy, d)
        )
    model = ours.engine.model
    base_bytes = model.lm_head.nbytes + sum(
        p.weight.nbytes for layer in model.layers for p in layer.projections.values()
    )  # bytes one decode step must read (the embedding table is only gathered; norms are ~0.01%)
    heavy_bytes = len(heavy) * heavy_params * model.lm_head.element_size()
    num_params = sum(p.numel() for p in hf.parameters())
    return workloads, {"base_bytes": base_bytes, "heavy_32_bytes": heavy_bytes, "num_params": num_params}


def summarize(tps: dict[str, float], sizes: dict[str, int], capacity: dict[str, float]) -> dict[str, float]:
    byte_limit = sizes["base_bytes"] / (sizes["base_bytes"] + sizes["heavy_32_bytes"])
    return {
        "paged_over_slot_capacity": capacity["paged_running"] / capacity["slot_running"],
        "landr8_32_over_base": tps["ours_landr8_32"] / tps["ours_base"],
        "heavy_fraction_of_byte_limit": tps["ours_heavy_32"] / tps["ours_base"] / byte_limit,
        "ours32_over_peft32": tps["ours_heavy_32"] / tps["peft_32"],
        "ours_base_over_hf_base": tps["ours_base"] / tps["hf_base"],
        "byte_limit_heavy_32": byte_limit,
    }


def print_table(best: dict[str, float], medians: dict[str, float], ratios: dict[str, float],
                host_us: dict[str, float]) -> None:
    print(f"{'workload':<18}{'tokens/s':>12}{'vs ours_base':>14}{'median':>10}")
    for name, value in best.items():
        print(f"{name:<18}{value:>12.1f}{value / best['ours_base']:>14.3f}{medians[name]:>10.1f}")
    print()
    print(f"{'ratio':<32}{'value':>8}{'target':>8}  met")
    for name, value in ratios.items():
        target = TARGETS.get(name)
        verdict = "" if target is None else ("yes" if value >= target else "NO")
        print(f"{name:<32}{value:>8.3f}{'' if target is None else f'{target:>8.2f}'}  {verdict}")
    static_met = "yes" if host_us["static"] <= HOST_STEP_TARGET_US else "NO"
    print(f"\nhost_step_us (batch 128, tiny model): eager {host_us['eager']:.0f}, "
          f"static {host_us['static']:.0f} (target <= {HOST_STEP_TARGET_US:.0f}: {static_met})")


def save_plot(path: str, tps: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    distinct = [1, 8, 32]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(distinct, [tps[f"ours_heavy_{d}"] for d in distinct], "o-", label="ours, heavy (r16, 7 proj)")
    ax.plot(distinct, [tps[f"peft_{d}"] for d in (1, 8)] + [tps["peft_32"]], "s-", label="PEFT, heavy")
    ax.plot([32], [tps["ours_landr8_32"]], "^", label="ours, LoRA-Land r8 q,v")
    ax.axhline(tps["ours_base"], linestyle="--", color="gray", label="ours, base only")
    ax.axhline(tps["hf_base"], linestyle=":", color="black", label="transformers, base only")
    ax.set_xscale("log", base=2)
    ax.set_xticks(distinct, [str(d) for d in distinct])
    ax.set_xlabel("distinct adapters in the batch")
    ax.set_ylabel("decode tokens/s")
    ax.set_ylim(0, 1.15 * max(tps.values()))
    ax.set_title("Multi-LoRA decode throughput (batch 32, ~100M Llama, CPU)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lorastream bench engine", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE")
    parser.add_argument("--plot", metavar="FILE", help="save a PNG plot of tokens/s against distinct adapters")
    parser.add_argument("--quick", action="store_true", help="short run: 1 round of 8 new tokens")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens generated per sequence (default 32)")
    parser.add_argument("--batch-size", type=int, default=32, help="sequences decoded together (default 32)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="cpu",
                        help="the compute thread's CPU time (needs --threads 1; the default) or wall time")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--workdir", help="where to build the model and adapters (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.new_tokens = 1, 8
    if args.rounds < 1 or args.new_tokens < 2 or args.batch_size < 1:
        parser.error("--rounds >= 1, --new-tokens >= 2 and --batch-size >= 1 are required")
    if args.clock == "cpu" and (args.threads != 1 or args.device != "cpu"):
        parser.error("--clock cpu measures one CPU thread: use it with --threads 1 on the cpu device")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # random weights make subnormal floats; real CPUs crawl on them
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="lorastream-bench-"))
    try:
        print(f"building the model and 64 adapters in {workdir} ...", file=sys.stderr)
        workloads, sizes = build_workloads(workdir, args)
        for run in workloads.values():  # warm-up: first calls allocate and page in weights
            run()
        samples: dict[str, list[float]] = {name: [] for name in workloads}
        for round_index in range(args.rounds):
            print(f"round {round_index + 1}/{args.rounds}", file=sys.stderr)
            for name, run in workloads.items():
                samples[name].append(run())
        print("paged vs slot capacity, host time per step ...", file=sys.stderr)
        capacity = engine_paged.capacity(300 if args.quick else 2000)
        host_us = engine_paged.host_step_us(workdir, steps=8 if args.quick else 40)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    best = {name: max(values) for name, values in samples.items()}
    medians = {name: statistics.median(values) for name, values in samples.items()}
    ratios = summarize(best, sizes, capacity)
    print_table(best, medians, ratios, host_us)
    if args.json:
        result = {
            "config": {**MODEL_SHAPE, "batch_size": args.batch_size, "new_tokens": args.new_tokens,
                       "rounds": args.rounds, "threads": args.threads, "clock": args.clock, "device": args.device,
                       "dtype": args.dtype,
                       "torch": torch.__version__, **sizes},
            "tokens_per_s": best,
            "median_tokens_per_s": medians,
            "samples": samples,
            "ratios": ratios,
            "median_ratios": summarize(medians, sizes, capacity),
            "capacity": capacity,
            "host_step_us": host_us,
            "targets": {**TARGETS, "host_step_us.static_at_most": HOST_STEP_TARGET_US},
            "met": {**{name: ratios[name] >= target for name, target in TARGETS.items()},
                    "host_step_us.static": host_us["static"] <= HOST_STEP_TARGET_US},
        }
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        save_plot(args.plot, best)
    return 0


if __name__ == "__main__":
    sys.exit(main())
