"""`lorastream bench train`: training tokens/s of our job runner against TRL's SFTTrainer configured as
a competent user would (`ratios.ours_over_trl`), and the speed each of our own choices brings
(`ratios.ours_over_<choice undone>`). Method: both train the same LoRA (r 8, alpha 16, dropout 0.05
on q/v; AdamW, cosine with warmup, clip 1.0, 4 x 4 accumulated micro-batches, fp32) on the same
locally built Llama-shaped model and the same tokenized prompt/completion rows. TRL runs with
completion-only loss, its fused LM head (log-probs tile by tile over the vocabulary; without Triton,
as on this CPU, it still scores every position, not only the targets) and fused AdamW, bf16 and
gradient checkpointing off, once with length-grouped batches and once padding-free; the faster of
the two, per round, is the reference. Our choices are measured by running our optimizer loop with
one undone at a time: micro-batches in stream order instead of longest-first (`no_length_grouping`),
logits at every position (`full_vocab_logits`), the padding mask passed to the model
(`attention_mask`). Every run is repeated in interleaved rounds (order rotating); tokens/s counts
real (unpadded) tokens over the training loop only; a ratio is the median of its per-round ratios.
The adapters of ours and TRL are then scored by one held-out evaluation (PEFT forward, per-token
completion loss).

bench/train_runs.py has our runs, bench/train_trl.py the TRL configuration, bench/train_data.py
the model and rows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from bench.train_data import MODEL_SHAPE, build_model, synthetic_rows, write_jsonl

TINY_SHAPE = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
)
TARGET_RATIO = 1.0  # ours_over_trl
MAX_FINAL_LOSS_GAP = 0.05


def paired_median(numerators: list[float], denominators: list[float]) -> float:
    """Median of per-round ratios: each round runs every side back to back, so load drifting between rounds cancels."""
    return statistics.median(n / d for n, d in zip(numerators, denominators, strict=True))


def round_orders(names: list[str], rounds: int) -> list[list[str]]:
    """Each round's run order: the list rotated by one per round, so no run is always first or last."""
    return [names[i % len(names) :] + names[: i % len(names)] for i in range(rounds)]


def ratios_of(samples: dict[str, list[float]], trl_names: list[str], variant_names: list[str]) -> dict:
    best_trl = [max(samples[name][i] for name in trl_names) for i in range(len(samples["ours"]))]
    ratios: dict = {"ours_over_trl": paired_median(samples["ours"], best_trl)}
    ratios["ours_over_trl_per_round"] = [o / t for o, t in zip(samples["ours"], best_trl, strict=True)]
    for name in trl_names:
        ratios[f"ours_over_{name}"] = paired_median(samples["ours"], samples[name])
    for name in variant_names:
        ratios[f"ours_over_{name}"] = paired_median(samples["ours"], samples[name])
    return ratios


def save_plot(path: str, samples: dict[str, list[float]], losses: dict[str, float], base_loss: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [2, 1]})
    names = list(samples)
    colors = ["tab:blue" if n == "ours" else "tab:orange" if n.startswith("trl") else "tab:gray" for n in names]
    left.bar(range(len(names)), [statistics.median(samples[n]) for n in names], color=colors)
    for i, name in enumerate(names):
        left.plot([i] * len(samples[name]), samples[name], "k.", markersize=6)
    left.set_xticks(range(len(names)), [n.replace("_", "\n", 1) for n in names], fontsize=7)
    left.set_ylabel("training tokens/s (real tokens)")
    left.set_title("Throughput (median, dots = rounds)", fontsize=9)
    loss_names = list(losses)
    loss_colors = ["tab:blue" if n == "ours" else "tab:orange" for n in loss_names]
    right.bar(range(len(loss_names)), [losses[n] for n in loss_names], color=loss_colors)
    values = [*losses.values(), base_loss]
    margin = 0.5 * (max(values) - min(values)) + 1e-3
    right.set_ylim(min(values) - margin, max(values) + margin)  # the gaps are small: zoom in
    right.set_xticks(range(len(loss_names)), [n.replace("_", "\n", 1) for n in loss_names], fontsize=7)
    right.axhline(base_loss, linestyle="--", color="black", label="base model, before training")
    right.legend(fontsize=7, loc="lower right")
    right.set_ylabel("held-out completion loss")
    right.set_title("Final loss", fontsize=9)
    fig.suptitle("LoRA fine-tune on CPU: ours vs TRL SFTTrainer, and ours with one choice undone", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lorastream bench train", description=__doc__.split("Method:")[0].strip())
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE")
    parser.add_argument("--plot", metavar="FILE", help="save a PNG plot (tokens/s and final loss)")
    parser.add_argument("--quick", action="store_true", help="short run: 1 round of 4 steps on 256 rows")
    parser.add_argument(
        "--tiny", action="store_true", help="a 2-layer 64-wide model, vocabulary 512, 1 step on 32 rows, 16 held-out rows (tests)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported; default 3)")
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per run (default 12)")
    parser.add_argument("--rows", type=int, default=1024, help="training rows (default 1024)")
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=2e-3,
        help="peak learning rate of every run (default 2e-3: 10x LoRA Land's, so the loss moves in few steps)",
    )
    parser.add_argument("--vocab-size", type=int, default=32000, help="output-head rows (default 32000, Llama-2's)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads")
    parser.add_argument("--workdir", help="where to build the model and data (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.steps, args.rows = 1, 4, 256
    if args.tiny:
        args.rounds, args.steps, args.rows, args.vocab_size = 1, 1, 32, 512
    if args.rounds < 1 or args.steps < 1 or args.rows < 32:
        parser.error("--rounds >= 1, --steps >= 1 and --rows >= 32 are required")
    return args


def main(argv: list[str] | None = None) -> int:
    from transformers import AutoTokenizer

    from bench.train_runs import VARIANTS, held_out_loss, run_ours, run_variant
    from bench.train_trl import CONFIGS, run_trl, trl_version
    from gpu_engine.training.dataset import load_rows
    from gpu_engine.training.examples import tokenize_rows
    from gpu_engine.training.spec import TrainJobSpec

    args = parse_args(argv)
    shape = TINY_SHAPE if args.tiny else MODEL_SHAPE
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="lorastream-bench-train-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        print(f"building the model and data in {workdir} ...", file=sys.stderr)
        model_dir = build_model(workdir / "model", args.vocab_size, shape)
        train_path = write_jsonl(workdir / "train.jsonl", synthetic_rows(args.rows, seed=1))
        eval_path = write_jsonl(workdir / "eval.jsonl", synthetic_rows(16 if args.tiny else 64, seed=2))
        spec = TrainJobSpec(
            str(model_dir),
            str(workdir / "ours"),
            str(train_path),
            max_steps=args.steps,
            learning_rate=args.learning_rate,
            eval_fraction=0.0,
            progress_interval_s=0.0,
            device="cpu",
            quantize="none",
        )
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        train_examples, _ = tokenize_rows(tokenizer, load_rows(train_path), spec.max_seq_len)
        eval_examples, _ = tokenize_rows(tokenizer, load_rows(eval_path), spec.max_seq_len)
        runs = {"ours": lambda: run_ours(spec)}
        for config in CONFIGS:
            runs[config] = lambda config=config: run_trl(spec, train_examples, config, workdir / config)
        for variant in VARIANTS:
            runs[variant] = lambda variant=variant: run_variant(spec, variant)
        samples: dict[str, list[float]] = {name: [] for name in runs}
        last: dict[str, dict] = {}
        for round_index, order in enumerate(round_orders(list(runs), args.rounds)):
            for name in order:
                print(f"round {round_index + 1}/{args.rounds}: {name}", file=sys.stderr)
                last[name] = runs[name]()
                samples[name].append(last[name]["tokens"] / last[name]["seconds"])
        scored = ["ours", *CONFIGS]
        losses = {name: held_out_loss(str(model_dir), last[name]["adapter_dir"], eval_examples) for name in scored}
        base_loss = held_out_loss(str(model_dir), None, eval_examples)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    ratios = ratios_of(samples, list(CONFIGS), list(VARIANTS))
    reference = max(CONFIGS, key=lambda name: medians[name])
    loss_gap = abs(losses["ours"] - losses[reference]) / losses[reference]
    ratios["held_out_loss_gap"] = loss_gap
    print(f"{'run':<22}{'tokens/s':>12}{'held-out loss':>16}{'train loss (last 10% of steps)':>32}")
    for name in runs:
        held_out = f"{losses[name]:>16.4f}" if name in losses else f"{'—':>16}"
        print(f"{name:<22}{medians[name]:>12.1f}{held_out}{last[name]['final_loss']:>32.4f}")
    print(f"held-out loss of the base model before training: {base_loss:.4f}")
    for name, value in ratios.items():
        if not isinstance(value, list):
            print(f"{name} {value:.3f}")
    if args.json:
        result = {
            "config": {
                **shape,
                "vocab_size": args.vocab_size,
                "steps": args.steps,
                "rows": args.rows,
                "rounds": args.rounds,
                "threads": args.threads,
                "torch": torch.__version__,
                "trl": trl_version(),
                "effective_batch_size": spec.effective_batch_size,
                "micro_batch_size": spec.micro_batch_size,
                "r": spec.r,
                "target_modules": list(spec.target_modules),
                "learning_rate": spec.learning_rate,
                "reference": reference,
            },
            "tokens_per_s": medians,
            "samples": samples,
            "final_loss": {
                "held_out": losses,
                "held_out_base_model": base_loss,
                "train_last_window": {name: last[name]["final_loss"] for name in runs},
            },
            "ratios": ratios,
            "targets": {"ours_over_trl": TARGET_RATIO, "held_out_loss_gap": MAX_FINAL_LOSS_GAP},
            "met": {
                "ours_over_trl": ratios["ours_over_trl"] >= TARGET_RATIO,
                "held_out_loss_gap": loss_gap <= MAX_FINAL_LOSS_GAP,
            },
        }
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        save_plot(args.plot, samples, losses, base_loss)
    return 0


if __name__ == "__main__":
    sys.exit(main())
