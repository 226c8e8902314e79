"""`lorastream bench train`: the ratio arithmetic, the ablations' equivalence to our loss, the TRL
configuration, and the report's shape from a tiny run."""

from __future__ import annotations

import json
import math

import pytest
import torch

from bench import train
from bench.train_data import build_model
from bench.train_runs import VARIANTS, StreamOrderPlan, full_vocab_loss_sum, masked_loss_sum
from bench.train_trl import CONFIGS, sft_config
from gpu_engine.training.batching import BatchPlan, padded_tokens
from gpu_engine.training.examples import Example
from gpu_engine.training.loss import collate, loss_sum
from gpu_engine.training.spec import TrainJobSpec


@pytest.mark.parametrize(
    ("numerators", "denominators", "expected"),
    [([2.0], [1.0], 2.0), ([2.0, 9.0, 3.0], [1.0, 3.0, 3.0], 2.0), ([1.0, 4.0], [2.0, 2.0], 1.25)],
)
def test_paired_median_is_the_median_of_per_round_ratios(numerators, denominators, expected):
    assert train.paired_median(numerators, denominators) == pytest.approx(expected)


@pytest.mark.parametrize("rounds", [1, 2, 3, 7])
def test_round_orders_run_every_side_once_per_round_and_rotate_who_goes_first(rounds):
    names = ["ours", "a", "b", "c"]
    orders = train.round_orders(names, rounds)
    assert len(orders) == rounds
    assert all(sorted(order) == sorted(names) for order in orders)
    assert [order[0] for order in orders] == [names[i % len(names)] for i in range(rounds)]


def test_ours_over_trl_takes_the_faster_trl_configuration_of_each_round():
    samples = {"ours": [100.0, 90.0, 120.0], "t1": [50.0, 60.0, 40.0], "t2": [80.0, 30.0, 60.0], "v": [50.0, 45.0, 60.0]}
    ratios = train.ratios_of(samples, ["t1", "t2"], ["v"])
    assert ratios["ours_over_trl_per_round"] == pytest.approx([100 / 80, 90 / 60, 120 / 60])
    assert ratios["ours_over_trl"] == pytest.approx(90 / 60)
    assert ratios["ours_over_t1"] == pytest.approx(100 / 50)
    assert ratios["ours_over_t2"] == pytest.approx(120 / 60)
    assert ratios["ours_over_v"] == pytest.approx(2.0)


def test_stream_order_plan_trains_the_same_examples_but_pads_more():
    lengths = [5, 90, 7, 60, 3, 120, 11, 40, 8, 75, 6, 30, 9, 100, 4, 50]
    grouped, stream = BatchPlan(lengths, 8, 2, seed=3), StreamOrderPlan(lengths, 8, 2, seed=3)
    for step in range(4):
        assert sorted(i for mb in stream.micro_batches(step) for i in mb) == sorted(grouped.step_indices(step))
        assert [i for mb in stream.micro_batches(step) for i in mb] == stream.step_indices(step)
        assert padded_tokens(lengths, grouped.micro_batches(step)) <= padded_tokens(lengths, stream.micro_batches(step))
    assert sum(padded_tokens(lengths, grouped.micro_batches(s)) for s in range(4)) < sum(
        padded_tokens(lengths, stream.micro_batches(s)) for s in range(4)
    )


@pytest.fixture(scope="module")
def tiny_lora(tmp_path_factory):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model_dir = build_model(tmp_path_factory.mktemp("model"), 300, train.TINY_SHAPE)
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    return get_peft_model(base, lora).eval()


@pytest.mark.parametrize("variant_loss", [full_vocab_loss_sum, masked_loss_sum])
def test_ablation_losses_compute_the_same_loss_as_ours(tiny_lora, variant_loss):
    examples = [
        Example(tuple(range(3, 3 + n)), first) for n, first in [(12, 5), (4, 1), (9, 8), (17, 2)]
    ]  # rows of different lengths: every row but the longest is padded
    batch = collate(examples, pad_id=0, device=torch.device("cpu"))
    with torch.no_grad():
        ours, variant = loss_sum(tiny_lora, batch), variant_loss(tiny_lora, batch)
    assert torch.isfinite(ours) and ours > 0
    torch.testing.assert_close(variant, ours, rtol=1e-5, atol=1e-4)


def test_padding_free_reference_keeps_packed_rows_apart(tiny_lora):
    """TRL's padding-free batches rely on transformers masking packed rows apart (position_ids, no cache) on sdpa."""
    first, second = torch.arange(5, 17), torch.arange(40, 47)
    with torch.no_grad():
        alone = [tiny_lora(input_ids=row[None], use_cache=False).logits[0] for row in (first, second)]
        position_ids = torch.cat([torch.arange(len(first)), torch.arange(len(second))])[None]
        packed = tiny_lora(input_ids=torch.cat([first, second])[None], position_ids=position_ids, use_cache=False)
    torch.testing.assert_close(packed.logits[0], torch.cat(alone), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("config", CONFIGS)
def test_trl_is_configured_like_our_job(tmp_path, config):
    spec = TrainJobSpec("/m", str(tmp_path / "o"), "/d.jsonl", max_steps=12, learning_rate=2e-3, device="cpu")
    args = sft_config(spec, config, tmp_path, total_steps=12)
    assert (args.max_steps, args.learning_rate, args.lr_scheduler_type.value) == (12, 2e-3, "cosine")
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps == spec.effective_batch_size
    assert args.per_device_train_batch_size == spec.micro_batch_size
    assert (args.warmup_steps, args.weight_decay, args.max_grad_norm, args.seed) == (1, 0.0, 1.0, 0)
    assert args.completion_only_loss and not args.bf16 and not args.gradient_checkpointing
    assert args.padding_free == (config == "trl_padding_free")
    assert (args.train_sampling_strategy == "group_by_length") == (config == "trl_length_grouped")


@pytest.mark.timeout(900)  # six training runs in one process: ~40 s on an idle 2-core machine, minutes under load
def test_tiny_run_reports_ours_over_trl_and_each_choice(tmp_path):
    json_path, plot_path = tmp_path / "train.json", tmp_path / "train.png"
    assert train.main(["--tiny", "--json", str(json_path), "--plot", str(plot_path), "--workdir", str(tmp_path / "w")]) == 0
    result = json.loads(json_path.read_text())
    runs = ["ours", *CONFIGS, *VARIANTS]
    assert sorted(result["tokens_per_s"]) == sorted(runs)
    assert all(len(result["samples"][name]) == 1 and result["samples"][name][0] > 0 for name in runs)
    ratios, samples = result["ratios"], result["samples"]
    best_trl = max(samples[name][0] for name in CONFIGS)
    assert ratios["ours_over_trl"] == pytest.approx(samples["ours"][0] / best_trl)
    for name in [*CONFIGS, *VARIANTS]:
        assert ratios[f"ours_over_{name}"] == pytest.approx(samples["ours"][0] / samples[name][0])
    assert result["config"]["reference"] in CONFIGS and result["config"]["trl"]
    held_out = result["final_loss"]["held_out"]
    assert sorted(held_out) == sorted(["ours", *CONFIGS]) and all(math.isfinite(v) for v in held_out.values())
    assert sorted(result["final_loss"]["train_last_window"]) == sorted(runs)
    assert set(result["met"]) == {"ours_over_trl", "held_out_loss_gap"}
    assert plot_path.stat().st_size > 0
