"""Segmented LoRA backends against the per-row reference, over ranks and segment layouts."""

from __future__ import annotations

import pytest
import torch

from gpu_engine.adapters import LoraAdapter, LoraWeights
from gpu_engine.lora_bank import LoraBank
from gpu_engine.lora_ops import LoraStep, choose_backend, has_grouped_mm, lora_delta_reference
from gpu_engine.model_spec import ModelSpec
from gpu_engine.segments import find_segments, segment_sort_key

SPEC = ModelSpec(
    arch="llama", num_layers=2, hidden_size=32, intermediate_size=48, num_heads=4, num_kv_heads=2, head_dim=8,
    vocab_size=64, max_position_embeddings=128, sliding_windows=(None, None), eos_token_ids=(2,),
)
# (rank, targets) per adapter: mixed ranks, different target sets, one shared rank bucket
ADAPTERS = [(4, ("q_proj", "down_proj")), (16, ("q_proj", "k_proj")), (4, ("q_proj",)), (64, ("down_proj",)),
            (8, ("v_proj",)), (4, ("q_proj", "k_proj"))]
LAYOUTS = {
    "empty": [],
    "base-only": [(None, 3)],
    "single-token": [(0, 1)],
    "all-distinct": [(0, 1), (1, 1), (2, 1), (3, 1), (4, 1)],
    "prefill-and-decode": [(1, 7), (0, 1), (None, 2), (3, 5), (2, 1), (None, 1)],
    "same-adapter-twice": [(2, 3), (2, 1), (0, 2)],
    "one-row-sparse-slots": [(0, 1), (5, 1), (None, 1)],
}


def make_adapter(index: int, rank: int, targets, generator) -> LoraAdapter:
    weights = {}
    for layer in range(SPEC.num_layers):
        for proj in targets:
            in_f, out_f = SPEC.projection_shape(proj)
            weights[(layer, proj)] = LoraWeights(
                torch.randn(rank, in_f, generator=generator), torch.randn(rank, out_f, generator=generator)
            )
    return LoraAdapter(f"a{index}", rank, weights)


@pytest.fixture(scope="module")
def bank_and_adapters():
    generator = torch.Generator().manual_seed(0)
    adapters = [make_adapter(i, r, t, generator) for i, (r, t) in enumerate(ADAPTERS)]
    bank = LoraBank(SPEC, torch.float32, torch.device("cpu"))
    filler = make_adapter(99, 4, ("q_proj",), generator)
    filler_key = bank.add(filler)
    keys = [bank.add(a) for a in adapters]
    bank.remove(filler_key)  # leaves an idle, zeroed slot in the rank-4 bucket
    return bank, adapters, keys


BACKENDS = ["loop"] + (["grouped"] if has_grouped_mm() else [])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("proj", ["q_proj", "k_proj", "v_proj", "down_proj", "up_proj"])
def test_backend_matches_reference(bank_and_adapters, backend, layout, proj):
    bank, adapters, keys = bank_and_adapters
    sequences = sorted(LAYOUTS[layout], key=lambda s: segment_sort_key(None if s[0] is None else keys[s[0]]))
    row_adapters = [a for a, n in sequences for _ in range(n)]
    in_f, out_f = SPEC.projection_shape(proj)
    x = torch.randn(len(row_adapters), in_f, generator=torch.Generator().manual_seed(1))
    base = torch.randn(len(row_adapters), out_f, generator=torch.Generator().manual_seed(2))
    segments = find_segments([None if a is None else keys[a] for a, _ in sequences], [n for _, n in sequences])
    y = base.clone()
    LoraStep(bank, segments, backend).apply(y, x, 1, proj)
    expected = base + lora_delta_reference(
        x, [None if a is None else adapters[a].weights.get((1, proj)) for a in row_adapters], out_f
    )
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-4)
    base_rows = [i for i, a in enumerate(row_adapters) if a is None or (1, proj) not in adapters[a].weights]
    assert torch.equal(y[base_rows], base[base_rows])  # exactly zero delta, not merely small


def test_bank_grows_and_reuses_slots(bank_and_adapters):
    bank = LoraBank(SPEC, torch.float32, torch.device("cpu"))
    generator = torch.Generator().manual_seed(3)
    keys = [bank.add(make_adapter(i, 8, ("q_proj",), generator)) for i in range(6)]
    assert keys == [(8, i) for i in range(6)] and bank.capacities() == {8: 8}
    bank.remove(keys[2])
    assert torch.count_nonzero(bank.buckets[8].a[(0, "q_proj")][2]) == 0
    assert bank.add(make_adapter(9, 8, ("v_proj",), generator)) == (8, 2)
    assert bank.num_bytes > 0


def test_auto_backend_choice():
    assert choose_backend("loop", torch.device("cpu")) == "loop"
    assert choose_backend("auto", torch.device("cuda")) == "triton"
    assert choose_backend("auto", torch.device("cpu")) == ("grouped" if has_grouped_mm() else "loop")
    with pytest.raises(ValueError):
        LoraStep(LoraBank(SPEC, torch.float32, torch.device("cpu")), [], "magic")


@pytest.mark.skipif(not has_grouped_mm(), reason="torch has no grouped_mm")
def test_grouped_gathers_used_slots_of_a_sparse_bucket():
    """A step using few slots of a large bucket runs grouped_mm over just those slots, exactly."""
    generator = torch.Generator().manual_seed(4)
    bank = LoraBank(SPEC, torch.float32, torch.device("cpu"))
    adapters = [make_adapter(i, 8, ("q_proj", "v_proj"), generator) for i in range(40)]
    keys = [bank.add(a) for a in adapters]
    picked = [3, 17, 31]  # sparse slots, one of them with a 4-row prefill
    counts = [1, 4, 1]
    segments = find_segments([keys[i] for i in picked], counts)
    step = LoraStep(bank, segments, "grouped")
    (_, _, offs, used), = step.buckets
    assert used.tolist() == [keys[i][1] for i in picked] and offs.tolist() == [1, 5, 6]
    in_f, out_f = SPEC.projection_shape("q_proj")
    x = torch.randn(sum(counts), in_f, generator=generator)
    y = torch.zeros(sum(counts), out_f)
    step.apply(y, x, 0, "q_proj")
    rows = [adapters[i].weights[(0, "q_proj")] for i, n in zip(picked, counts) for _ in range(n)]
    torch.testing.assert_close(y, lora_delta_reference(x, rows, out_f), rtol=1e-5, atol=1e-4)
    most = [key for i, key in enumerate(keys) if i % 7 != 3]  # 34 of the bucket's 64 slots, with gaps
    assert LoraStep(bank, find_segments(most, [1] * len(most)), "grouped").buckets[0][3] is None  # whole bucket
