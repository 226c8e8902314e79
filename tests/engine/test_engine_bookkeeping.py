"""Table-driven tests of the torch-free bookkeeping: segments, scheduler, config."""

from __future__ import annotations

import pytest

from gpu_engine.config import EngineConfig
from gpu_engine.scheduler import Scheduler
from gpu_engine.segments import BucketRows, Segment, find_segments, group_buckets, segment_sort_key
from gpu_engine.seq_state import SeqState
from gpu_engine.types import GenerationRequest

A, B, C = (8, 0), (8, 2), (16, 1)


@pytest.mark.parametrize(
    ("keys", "rows", "expected"),
    [
        ([], [], []),
        ([None, None], [1, 5], []),
        ([A], [1], [Segment(8, 0, 0, 1)]),
        ([A, A, B], [1, 1, 3], [Segment(8, 0, 0, 2), Segment(8, 2, 2, 5)]),
        ([A, B, C, None], [1, 1, 1, 1], [Segment(8, 0, 0, 1), Segment(8, 2, 1, 2), Segment(16, 1, 2, 3)]),
        ([A, A], [2, 0], [Segment(8, 0, 0, 2)]),
        ([A, None, A], [1, 1, 1], [Segment(8, 0, 0, 1), Segment(8, 0, 2, 3)]),
    ],
)
def test_find_segments(keys, rows, expected):
    assert find_segments(keys, rows) == expected


def test_find_segments_rejects_bad_input():
    with pytest.raises(ValueError):
        find_segments([A], [1, 2])
    with pytest.raises(ValueError):
        find_segments([A], [-1])


@pytest.mark.parametrize(
    ("segments", "capacities", "expected"),
    [
        ([], {8: 4}, []),
        ([Segment(8, 2, 0, 3)], {8: 4}, [BucketRows(8, 0, 3, (0, 0, 3, 3))]),
        (
            [Segment(8, 0, 0, 1), Segment(8, 3, 1, 4), Segment(16, 1, 4, 6)],
            {8: 4, 16: 2},
            [BucketRows(8, 0, 4, (1, 1, 1, 4)), BucketRows(16, 4, 6, (0, 2))],
        ),
        # one row per slot, consecutive slots: usable as a batch over the slot range
        (
            [Segment(8, 1, 0, 1), Segment(8, 2, 1, 2), Segment(8, 3, 2, 3)],
            {8: 4},
            [BucketRows(8, 0, 3, (0, 1, 2, 3), first_slot=1)],
        ),
        ([Segment(8, 1, 0, 1), Segment(8, 3, 1, 2)], {8: 4}, [BucketRows(8, 0, 2, (0, 1, 1, 2))]),
    ],
)
def test_group_buckets(segments, capacities, expected):
    assert group_buckets(segments, capacities) == expected


@pytest.mark.parametrize(
    "segments",
    [
        [Segment(8, 2, 0, 1), Segment(8, 1, 1, 2)],  # slots out of order
        [Segment(8, 0, 0, 1), Segment(8, 1, 2, 3)],  # a gap in the bucket's rows
    ],
)
def test_group_buckets_rejects_unsorted_rows(segments):
    with pytest.raises(ValueError):
        group_buckets(segments, {8: 4})


def test_sort_key_orders_by_rank_then_slot_with_base_last():
    keys = [None, (16, 0), (8, 3), (8, 1)]
    assert sorted(keys, key=segment_sort_key) == [(8, 1), (8, 3), (16, 0), None]


def seq(request_id: str, prompt_len: int) -> SeqState:
    return SeqState.from_prompt(GenerationRequest(request_id, "p"), list(range(prompt_len)), None)


def plan(scheduler: Scheduler) -> list[tuple[str, int]]:
    chunks = scheduler.schedule()
    for chunk in chunks:
        completes = chunk.completes
        chunk.seq.num_computed += chunk.num_tokens
        if completes:
            chunk.seq.append_token(0)
    return [(c.seq.request_id, c.num_tokens) for c in chunks]


@pytest.mark.parametrize(
    ("max_batch", "budget", "prompts", "expected_steps"),
    [
        # one request: prefill, then one token per step
        (2, 8, {"a": 3}, [[("a", 3)], [("a", 1)]]),
        # the budget splits a long prompt over steps (chunked prefill)
        (2, 4, {"a": 10}, [[("a", 4)], [("a", 4)], [("a", 2)], [("a", 1)]]),
        # decodes first, then the unfinished prefill, then newcomers while slots last
        (2, 4, {"a": 2, "b": 6, "c": 1}, [[("a", 2), ("b", 2)], [("a", 1), ("b", 3)], [("a", 1), ("b", 1)]]),
        # three requests, two slots: the third waits
        (2, 16, {"a": 1, "b": 1, "c": 1}, [[("a", 1), ("b", 1)], [("a", 1), ("b", 1)]]),
    ],
)
def test_scheduler_plans(max_batch, budget, prompts, expected_steps):
    scheduler = Scheduler(max_batch, budget)
    for request_id, prompt_len in prompts.items():
        scheduler.add(seq(request_id, prompt_len))
    assert [plan(scheduler) for _ in expected_steps] == expected_steps


def test_scheduler_finish_frees_slot_for_waiting_request():
    scheduler = Scheduler(1, 4)
    a, b = seq("a", 2), seq("b", 2)
    scheduler.add(a)
    scheduler.add(b)
    assert plan(scheduler) == [("a", 2)]
    scheduler.finish(a)
    assert (a.kv_blocks, scheduler.num_running, scheduler.num_waiting) == ([], 0, 1)
    assert plan(scheduler) == [("b", 2)]
    scheduler.finish(b)
    scheduler.add(c := seq("c", 1))
    scheduler.finish(c)
    assert not scheduler.has_unfinished()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"model_path": ""},
        {"dtype": "float64"},
        {"quantize": "int8"},
        {"device": "tpu"},
        {"max_batch_size": 0},
        {"max_batch_size": 8, "max_step_tokens": 4},
        {"max_model_len": 1},
        {"lora_backend": "magic"},
        {"max_lora_rank": 0},
    ],
)
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        EngineConfig(**{"model_path": "m", **kwargs})


def test_config_defaults_are_valid():
    config = EngineConfig("m")
    assert (config.dtype, config.device, config.quantize, config.max_batch_size) == ("float32", "auto", None, 64)
