"""Pure-Python bookkeeping: batch plans, learning-rate schedules, progress rate and ETA."""

from __future__ import annotations

import pytest

from gpu_engine.training.batching import BatchPlan, padded_tokens
from gpu_engine.training.progress import ProgressMeter
from gpu_engine.training.schedule import lr_multiplier, warmup_steps_for


def test_each_epoch_visits_every_example_once() -> None:
    plan = BatchPlan(list(range(1, 33)), effective_batch_size=8, micro_batch_size=2, seed=5)
    epoch0 = [i for step in range(4) for i in plan.step_indices(step)]
    epoch1 = [i for step in range(4, 8) for i in plan.step_indices(step)]
    assert sorted(epoch0) == sorted(epoch1) == list(range(32))
    assert epoch0 != epoch1


def test_steps_are_a_function_of_seed_and_step_alone() -> None:
    lengths = [7, 3, 9, 1, 4, 4, 8, 2, 6, 5]
    fresh = BatchPlan(lengths, 4, 2, seed=1)
    walked = BatchPlan(lengths, 4, 2, seed=1)
    for step in range(6):
        walked.micro_batches(step)
    assert fresh.micro_batches(6) == walked.micro_batches(6)
    assert BatchPlan(lengths, 4, 2, seed=2).step_indices(0) != fresh.step_indices(0) or lengths == sorted(lengths)


def test_micro_batches_hold_the_step_sorted_by_length() -> None:
    lengths = [50, 3, 48, 2, 47, 5, 49, 4]
    plan = BatchPlan(lengths, 8, 2, seed=0)
    micro = plan.micro_batches(0)
    assert sorted(i for mb in micro for i in mb) == sorted(plan.step_indices(0))
    assert [lengths[i] for mb in micro for i in mb] == sorted(lengths, reverse=True)
    unsorted = [plan.step_indices(0)[i : i + 2] for i in range(0, 8, 2)]
    assert padded_tokens(lengths, micro) <= padded_tokens(lengths, unsorted)


def test_effective_batch_larger_than_the_dataset_wraps_epochs() -> None:
    plan = BatchPlan([1, 2, 3], 7, 7, seed=0)
    assert len(plan.step_indices(0)) == 7 and set(plan.step_indices(0)) == {0, 1, 2}


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant"])
@pytest.mark.parametrize(("total", "ratio"), [(100, 0.03), (10, 0.0), (7, 0.5), (1, 0.03)])
def test_schedule_matches_transformers(kind: str, total: int, ratio: float) -> None:
    import torch
    from transformers import (
        get_constant_schedule_with_warmup,
        get_cosine_schedule_with_warmup,
        get_linear_schedule_with_warmup,
    )

    warmup = warmup_steps_for(total, ratio)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    if kind == "constant":
        scheduler = get_constant_schedule_with_warmup(optimizer, warmup)
    else:
        make = get_cosine_schedule_with_warmup if kind == "cosine" else get_linear_schedule_with_warmup
        scheduler = make(optimizer, warmup, total)
    for step in range(total):
        assert lr_multiplier(step, total, warmup, kind) == pytest.approx(optimizer.param_groups[0]["lr"], abs=1e-12)
        optimizer.step()
        scheduler.step()


def test_reports_are_rate_bounded_and_the_last_step_always_reports() -> None:
    meter = ProgressMeter(total_steps=10, start_step=2, interval_s=5.0, now_s=100.0)
    meter.step_done(3, 400, now_s=101.0)
    assert not meter.is_due(101.0)
    assert meter.is_due(105.0)
    meter.mark_reported(105.0)
    meter.step_done(4, 400, now_s=104.0)
    assert not meter.is_due(106.0)
    meter.step_done(10, 400, now_s=110.0)
    assert meter.is_due(110.0)


def test_throughput_and_eta_count_this_run_only() -> None:
    meter = ProgressMeter(total_steps=12, start_step=4, interval_s=0.0, now_s=0.0)
    assert meter.eta_s is None
    meter.step_done(6, 1000, now_s=2.0)
    assert meter.tokens_per_s == 500.0
    assert meter.eta_s == pytest.approx(6.0)  # 6 steps left at 1 s per step
