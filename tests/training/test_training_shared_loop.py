"""One learning-rate schedule and one optimizer loop for every trainer: the schedule's table, the
loop's gradient on packed text against Hugging Face's, and a LoRA fine-tune stepping through it."""

from __future__ import annotations

import math

import pytest
import torch

from gpu_engine.training.batching import BatchPlan
from gpu_engine.training.examples import packed_examples
from gpu_engine.training.optimizer_loop import OptimizerLoop
from gpu_engine.training.schedule import LrSchedule, lr_multiplier


@pytest.mark.parametrize(
    ("kind", "min_ratio", "expected"),
    [
        # 10 steps, 2 of warmup: 0, 1/2, then the decay over the 8 steps left
        ("cosine", 0.0, [0.0, 0.5, 1.0, 0.96194, 0.85355, 0.69134, 0.5, 0.30866, 0.14645, 0.03806]),
        ("cosine", 0.1, [0.0, 0.5, 1.0, 0.96575, 0.86820, 0.72221, 0.55, 0.37779, 0.23180, 0.13425]),
        ("linear", 0.0, [0.0, 0.5, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125]),
        ("constant", 0.0, [0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
    ],
)
def test_schedule_table(kind, min_ratio, expected):
    schedule = LrSchedule(2.0, total_steps=10, warmup_steps=2, kind=kind, min_ratio=min_ratio)
    assert [schedule.learning_rate_at(step) / 2.0 for step in range(10)] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(("total", "warmup", "min_ratio"), [(100, 3, 0.1), (10, 0, 0.25), (7, 4, 0.5)])
def test_cosine_floor_matches_transformers_min_lr_schedule(total, warmup, min_ratio):
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(optimizer, warmup, total, min_lr_rate=min_ratio)
    for step in range(total):
        assert lr_multiplier(step, total, warmup, "cosine", min_ratio) == pytest.approx(
            optimizer.param_groups[0]["lr"], abs=1e-12
        )
        optimizer.step()
        scheduler.step()


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        (dict(learning_rate=0.0), "learning_rate"),
        (dict(learning_rate=math.nan), "learning_rate"),
        (dict(total_steps=0), "total_steps"),
        (dict(warmup_steps=11), "warmup_steps"),
        (dict(kind="step"), "kind"),
        (dict(min_ratio=1.0), "min_ratio"),
    ],
)
def test_schedule_refuses_bad_values(fields, why):
    with pytest.raises(ValueError, match=why):
        LrSchedule(**{"learning_rate": 1e-3, "total_steps": 10, "warmup_steps": 2, **fields})


def test_packed_examples_cut_the_stream_into_full_blocks():
    blocks = packed_examples([[1, 2, 3], [4], [5, 6]], eos_id=0, block_len_tokens=4)
    # stream 1 2 3 0 4 0 5 6 0: two full blocks, the tail (0) dropped
    assert [(b.input_ids, b.first_target, b.num_loss_tokens) for b in blocks] == [
        ((1, 2, 3, 0), 1, 3),
        ((4, 0, 5, 6), 1, 3),
    ]


def _tiny_causal_lm(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def test_a_full_parameter_step_is_huggingfaces_mean_loss_step():
    """The loop's first update on packed blocks (2 micro-batches) equals AdamW on HF's labels loss."""
    generator = torch.Generator().manual_seed(0)
    texts = [torch.randint(3, 50, (9,), generator=generator).tolist() for _ in range(8)]
    blocks = packed_examples(texts, eos_id=2, block_len_tokens=10)
    ours, reference = _tiny_causal_lm(), _tiny_causal_lm()
    plan = BatchPlan([len(b.input_ids) for b in blocks], effective_batch_size=4, micro_batch_size=2, seed=3)
    schedule = LrSchedule(1e-2, total_steps=4, warmup_steps=0)
    loop = OptimizerLoop(
        ours, blocks, plan, schedule, pad_id=0, device=torch.device("cpu"), weight_decay=0.01, max_grad_norm=0.5
    )
    done = loop.step(0)

    batch = torch.tensor([blocks[i].input_ids for i in plan.step_indices(0)])
    loss = reference(input_ids=batch, labels=batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.5)
    optimizer = torch.optim.AdamW(reference.parameters(), lr=1e-2, weight_decay=0.01)
    optimizer.step()

    assert (done.step, done.learning_rate, done.num_targets) == (1, 1e-2, 4 * 9)
    assert done.mean_loss() == pytest.approx(loss.item(), rel=1e-5)
    for (name, p_ours), p_ref in zip(ours.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p_ours, p_ref, rtol=1e-4, atol=1e-6, msg=name)


def test_the_lora_trainer_steps_through_the_shared_loop_on_its_schedule(tiny_base, task_file, tmp_path, monkeypatch):
    from gpu_engine.training import TrainJobSpec
    from gpu_engine.training.trainer import run_training

    steps = []
    original = OptimizerLoop.step

    def spy(self, step, *args):
        done = original(self, step, *args)
        steps.append((type(self.model).__name__, done.step, done.learning_rate))
        return done

    monkeypatch.setattr(OptimizerLoop, "step", spy)
    spec = TrainJobSpec(
        str(tiny_base), str(tmp_path / "out"), str(task_file),
        effective_batch_size=4, micro_batch_size=2, max_steps=5, max_seq_len=64,
        learning_rate=1e-2, warmup_ratio=0.2, device="cpu", progress_interval_s=0.0,
    )
    result = run_training(spec)
    schedule = LrSchedule(1e-2, total_steps=5, warmup_steps=1, kind="cosine")
    assert steps == [("PeftModelForCausalLM", s + 1, schedule.learning_rate_at(s)) for s in range(5)]
    assert result.steps == 5
