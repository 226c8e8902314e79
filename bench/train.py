"""`lorastream bench train`: training tokens/s of our job runner against a plain transformers + peft loop.

Both train the same LoRA (LoRA Land defaults: r 8, alpha 16, dropout 0.05 on q/v, lr 2e-4 cosine
with 3% warmup, effective batch 16 = 4 x 4 accumulated, grad-norm clip 1.0) on the same locally
built Llama-shaped model, the same tokenized rows and the same examples in each optimizer step.
The reference is the loop most people write: micro-batches padded to their longest row with an
attention mask, `model(**batch, labels=...)`, loss / accumulation steps, `get_cosine_schedule_with_warmup`.
Rounds are interleaved (order alternating); tokens/s counts real (unpadded) tokens over the training
loop only; the reported ratio is the median of the per-round ratios.
Both adapters are then scored by one held-out evaluation (PEFT forward, per-token completion loss).
"""

from __future__ import annotations

import argparse
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

MODEL_SHAPE = dict(
    hidden_size=512, intermediate_size=1408, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4
)
TARGET_RATIO = 1.0
MAX_FINAL_LOSS_GAP = 0.05
_WORDS = (
    "good great fine bad awful poor model adapter token stream kafka batch cat dog bird tree river city "
    "road house quick slow bright dark small large green blue red old new warm cold"
).split()
_POSITIVE, _NEGATIVE = {"good", "great", "fine", "bright", "warm"}, {"bad", "awful", "poor", "dark", "cold"}


def build_model(out: Path, vocab_size: int, seed: int = 0) -> Path:
    """A random-init Llama with the local tiny tokenizer; rows of the vocabulary beyond it stay unused."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from gpu_engine.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(out)
    config = LlamaConfig(
        vocab_size=max(vocab_size, len(tokenizer)),
        max_position_embeddings=1024,
        initializer_range=0.02,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **MODEL_SHAPE,
    )
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(str(out))
    return out


def synthetic_rows(n: int, seed: int) -> list[dict[str, str]]:
    """Half sentiment labels of long reviews, half copies of a review's last words: varied lengths."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(8, 160))]
        if i % 2 == 0:
            score = sum(w in _POSITIVE for w in words) - sum(w in _NEGATIVE for w in words)
            rows.append(
                {
                    "prompt": f"Review: {' '.join(words)}\nSentiment:",
                    "completion": " positive" if score >= 0 else " negative",
                }
            )
        else:
            tail = words[-rng.randint(3, 12) :]
            rows.append({"prompt": f"Text: {' '.join(words)}\nLast words:", "completion": " " + " ".join(tail)})
    return rows


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def last_window_mean(step_losses: list[float]) -> float:
    """Mean loss of the last 10% of optimizer steps (at least one)."""
    return statistics.fmean(step_losses[-max(1, len(step_losses) // 10) :])


def run_ours(spec) -> dict:
    from gpu_engine.training.events import JobEventKind
    from gpu_engine.training.trainer import run_training

    shutil.rmtree(spec.output_dir, ignore_errors=True)
    step_losses: list[float] = []
    result = run_training(spec, lambda e: step_losses.append(e.loss) if e.kind is JobEventKind.PROGRESS else None)
    return {
        "tokens": result.train_tokens,
        "seconds": result.train_time_s,
        "final_loss": last_window_mean(step_losses),
        "adapter_dir": result.adapter_dir,
    }


def run_reference(spec, examples, out_dir: Path) -> dict:
    """The plain loop: HF forward with labels and attention mask, padding to the micro-batch's longest row."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, get_cosine_schedule_with_warmup

    from gpu_engine.training.batching import BatchPlan
    from gpu_engine.training.schedule import warmup_steps_for

    base = AutoModelForCausalLM.from_pretrained(spec.base_model_path, dtype=torch.float32)
    lora = LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=list(spec.target_modules),
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(spec.seed)
    model = get_peft_model(base, lora)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=spec.learning_rate, weight_decay=spec.weight_decay)
    total = spec.total_steps(len(examples))
    scheduler = get_cosine_schedule_with_warmup(optimizer, warmup_steps_for(total, spec.warmup_ratio), total)
    plan = BatchPlan(
        [len(ex.input_ids) for ex in examples], spec.effective_batch_size, spec.micro_batch_size, spec.seed
    )
    accumulation = spec.grad_accum_steps
    model.train()
    tokens, step_losses, start = 0, [], time.perf_counter()
    for step in range(total):
        indices = plan.step_indices(step)
        micro_losses = []
        for i in range(0, len(indices), spec.micro_batch_size):
            batch = [examples[j] for j in indices[i : i + spec.micro_batch_size]]
            width = max(len(ex.input_ids) for ex in batch)
            input_ids = torch.tensor([list(ex.input_ids) + [0] * (width - len(ex.input_ids)) for ex in batch])
            attention_mask = torch.tensor([[1] * len(ex.input_ids) + [0] * (width - len(ex.input_ids)) for ex in batch])
            labels = torch.tensor([ex.labels() + [-100] * (width - len(ex.input_ids)) for ex in batch])
            loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
            (loss / accumulation).backward()
            micro_losses.append(loss.item())
            tokens += int(attention_mask.sum())
        torch.nn.utils.clip_grad_norm_(params, spec.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        step_losses.append(statistics.fmean(micro_losses))
    seconds = time.perf_counter() - start
    model.save_pretrained(str(out_dir))
    return {
        "tokens": tokens,
        "seconds": seconds,
        "final_loss": last_window_mean(step_losses),
        "adapter_dir": str(out_dir),
    }


@torch.no_grad()
def held_out_loss(model_dir: str, adapter_dir: str | None, examples) -> float:
    """Per-token completion loss of base (+ adapter) on `examples`, one row at a time (no padding)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, adapter_dir)
    model.eval()
    total, count = 0.0, 0
    for ex in examples:
        loss = model(input_ids=torch.tensor([ex.input_ids]), labels=torch.tensor([ex.labels()])).loss
        total += loss.item() * ex.num_loss_tokens
        count += ex.num_loss_tokens
    return total / count


def save_plot(path: str, samples: dict[str, list[float]], losses: dict[str, float], base_loss: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
    names = ["ours", "reference"]
    left.bar(names, [statistics.median(samples[n]) for n in names], color=["tab:blue", "tab:gray"])
    for i, name in enumerate(names):
        left.plot([i] * len(samples[name]), samples[name], "k.", markersize=6)
    left.set_ylabel("training tokens/s (real tokens)")
    left.set_title("Throughput (median, dots = rounds)")
    right.bar(names, [losses[n] for n in names], color=["tab:blue", "tab:gray"])
    right.axhline(base_loss, linestyle="--", color="black", label="base model, before training")
    right.legend(fontsize=8, loc="lower right")
    right.set_ylabel("held-out completion loss")
    right.set_title("Final loss")
    fig.suptitle("LoRA fine-tune, Llama-shaped model on CPU: ours vs transformers + peft loop", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lorastream bench train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE")
    parser.add_argument("--plot", metavar="FILE", help="save a PNG plot (tokens/s and final loss)")
    parser.add_argument("--quick", action="store_true", help="short run: 1 round of 4 steps on 256 rows")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported; default 3)")
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per run (default 12)")
    parser.add_argument("--rows", type=int, default=1024, help="training rows (default 1024)")
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=2e-3,
        help="peak learning rate of both runs (default 2e-3: 10x LoRA Land's, so the loss moves in few steps)",
    )
    parser.add_argument("--vocab-size", type=int, default=32000, help="output-head rows (default 32000, Llama-2's)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads")
    parser.add_argument("--workdir", help="where to build the model and data (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.steps, args.rows = 1, 4, 256
    if args.rounds < 1 or args.steps < 1 or args.rows < 32:
        parser.error("--rounds >= 1, --steps >= 1 and --rows >= 32 are required")
    return args


def main(argv: list[str] | None = None) -> int:
    from transformers import AutoTokenizer

    from gpu_engine.training.dataset import load_rows
    from gpu_engine.training.examples import tokenize_rows
    from gpu_engine.training.spec import TrainJobSpec

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="lorastream-bench-train-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        print(f"building the model and data in {workdir} ...", file=sys.stderr)
        model_dir = build_model(workdir / "model", args.vocab_size)
        train_path = write_jsonl(workdir / "train.jsonl", synthetic_rows(args.rows, seed=1))
        eval_path = write_jsonl(workdir / "eval.jsonl", synthetic_rows(64, seed=2))
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
        runs = {
            "ours": lambda: run_ours(spec),
            "reference": lambda: run_reference(spec, train_examples, workdir / "reference"),
        }
        samples: dict[str, list[float]] = {name: [] for name in runs}
        last: dict[str, dict] = {}
        for round_index in range(args.rounds):
            order = list(runs) if round_index % 2 == 0 else list(reversed(runs))
            for name in order:
                print(f"round {round_index + 1}/{args.rounds}: {name}", file=sys.stderr)
                last[name] = runs[name]()
                samples[name].append(last[name]["tokens"] / last[name]["seconds"])
        losses = {name: held_out_loss(str(model_dir), run["adapter_dir"], eval_examples) for name, run in last.items()}
        base_loss = held_out_loss(str(model_dir), None, eval_examples)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    # each round runs both back to back: the median of per-round ratios resists load that drifts between rounds
    paired = [o / r for o, r in zip(samples["ours"], samples["reference"], strict=True)]
    ratio = statistics.median(paired)
    loss_gap = abs(losses["ours"] - losses["reference"]) / losses["reference"]
    print(f"{'run':<12}{'tokens/s':>12}{'held-out loss':>16}{'train loss (last 10% of steps)':>32}")
    for name in runs:
        print(f"{name:<12}{medians[name]:>12.1f}{losses[name]:>16.4f}{last[name]['final_loss']:>32.4f}")
    print(f"held-out loss of the base model before training: {base_loss:.4f}")
    print(f"ours_over_reference {ratio:.3f} (target >= {TARGET_RATIO}); held-out loss gap {loss_gap:.2%} (<= 5%)")
    if args.json:
        result = {
            "config": {
                **MODEL_SHAPE,
                "vocab_size": args.vocab_size,
                "steps": args.steps,
                "rows": args.rows,
                "rounds": args.rounds,
                "threads": args.threads,
                "torch": torch.__version__,
                "effective_batch_size": spec.effective_batch_size,
                "micro_batch_size": spec.micro_batch_size,
                "r": spec.r,
                "target_modules": list(spec.target_modules),
                "learning_rate": spec.learning_rate,
            },
            "tokens_per_s": medians,
            "samples": samples,
            "final_loss": {
                "held_out": losses,
                "held_out_base_model": base_loss,
                "train_last_window": {n: last[n]["final_loss"] for n in runs},
            },
            "ratios": {
                "ours_over_reference": ratio,
                "ours_over_reference_per_round": paired,
                "median_over_median": medians["ours"] / medians["reference"],
                "held_out_loss_gap": loss_gap,
            },
            "targets": {"ours_over_reference": TARGET_RATIO, "held_out_loss_gap": MAX_FINAL_LOSS_GAP},
            "met": {"ours_over_reference": ratio >= TARGET_RATIO, "held_out_loss_gap": loss_gap <= MAX_FINAL_LOSS_GAP},
        }
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        save_plot(args.plot, samples, losses, base_loss)
    return 0


if __name__ == "__main__":
    sys.exit(main())
