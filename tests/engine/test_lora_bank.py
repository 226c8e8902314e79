"""LoraBank memory accounting and the device tier's budget: what is allocated, table-driven."""

from __future__ import annotations

import pytest
import torch

from gpu_engine.adapters import LoraAdapter, LoraWeights
from gpu_engine.cache_stats import CacheStats
from gpu_engine.device_cache import DeviceCache
from gpu_engine.errors import AdapterUnavailableError, DeviceBudgetError
from gpu_engine.lora_bank import LoraBank
from tests.engine.test_adapter_cache import SPEC

ATTN = ("q_proj", "v_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
FLOAT = 4  # bytes per element of the float32 banks below


def adapter(name: str, rank: int, targets=ATTN, layers=(0, 1)) -> LoraAdapter:
    generator = torch.Generator().manual_seed(sum(map(ord, name)))
    weights = {}
    for layer in layers:
        for proj in targets:
            in_f, out_f = SPEC.projection_shape(proj)
            weights[(layer, proj)] = LoraWeights(
                torch.randn(rank, in_f, generator=generator), torch.randn(rank, out_f, generator=generator)
            )
    return LoraAdapter(name, rank, weights)


def slot_bytes(rank: int, targets, layers=2) -> int:
    return rank * FLOAT * layers * sum(sum(SPEC.projection_shape(p)) for p in targets)


def allocated(bank: LoraBank) -> int:
    """What the buffers hold, counted from the tensors themselves."""
    return sum(t.nbytes for b in bank.buckets.values() for t in (*b.a.values(), *b.b.values()))


def new_bank() -> LoraBank:
    return LoraBank(SPEC, torch.float32, torch.device("cpu"))


# ops: ("add", name, rank, targets) | ("remove", name) | "trim"; then expected {rank: (capacity, targets)}
BANK_CASES = {
    "first adapter: a bucket of 4": ([("add", "a", 4, ATTN)], {4: (4, ATTN)}),
    "a fifth doubles": ([("add", n, 4, ATTN) for n in "abcde"], {4: (8, ATTN)}),
    "ranks never share": ([("add", "a", 4, ATTN), ("add", "b", 8, MLP)], {4: (4, ATTN), 8: (4, MLP)}),
    "a new projection widens the bucket": (
        [("add", "a", 4, ATTN), ("add", "b", 4, MLP)], {4: (4, ATTN + MLP)},
    ),
    "trim drops unused projections and trailing slots": (
        [("add", "a", 4, ATTN), ("add", "b", 4, MLP), ("add", "c", 4, ATTN), ("remove", "b"), ("remove", "c"), "trim"],
        {4: (1, ATTN)},
    ),
    "trim keeps a hole below an occupied slot": (
        [("add", "a", 4, ATTN), ("add", "b", 4, ATTN), ("remove", "a"), "trim"], {4: (2, ATTN)},
    ),
    "trim drops an empty bucket": ([("add", "a", 4, ATTN), ("add", "b", 8, ATTN), ("remove", "b"), "trim"],
                                   {4: (1, ATTN)}),
}


@pytest.mark.parametrize("case", BANK_CASES)
def test_bank_allocates_what_it_accounts(case):
    ops, expected = BANK_CASES[case]
    bank = new_bank()
    keys = {}
    for op in ops:
        if op == "trim":
            bank.trim()
        elif op[0] == "add":
            keys[op[1]] = bank.add(adapter(op[1], op[2], op[3]))
        else:
            bank.remove(keys.pop(op[1]))
        assert bank.num_bytes == allocated(bank)
    assert bank.capacities() == {rank: cap for rank, (cap, _) in expected.items()}
    assert bank.num_bytes == sum(cap * slot_bytes(rank, t) for rank, (cap, t) in expected.items())
    for name, key in keys.items():  # survivors keep their slot and their weights
        rank, slot = key
        weights = adapter(name, rank, ATTN if (0, "q_proj") in bank.buckets[rank].targets[slot] else MLP)
        first = next(iter(weights.weights))
        assert torch.equal(bank.buckets[rank].a[first][slot], weights.weights[first].a)


@pytest.mark.parametrize(
    ("keep", "adding", "expected"),
    [
        ([], ("n", 4, ATTN), slot_bytes(4, ATTN)),
        ([(4, 0), (4, 1)], None, 2 * slot_bytes(4, ATTN)),
        ([(4, 1)], ("n", 4, MLP), 2 * slot_bytes(4, ATTN + MLP)),  # goes to slot 0, below slot 1
        ([(4, 0), (8, 0)], ("n", 8, MLP), 1 * slot_bytes(4, ATTN) + 2 * slot_bytes(8, ATTN + MLP)),
    ],
)
def test_footprint(keep, adding, expected):
    bank = new_bank()
    for name in "ab":
        bank.add(adapter(name, 4))
    bank.add(adapter("c", 8))
    before = bank.num_bytes
    assert bank.footprint(keep, None if adding is None else adapter(*adding)) == expected
    assert bank.num_bytes == before  # nothing allocated


def test_growth_stops_at_the_budget_and_refuses_beyond_it_unchanged():
    bank = new_bank()
    budget = 3 * slot_bytes(4, ATTN)
    keys = [bank.add(adapter(n, 4), budget) for n in "abc"]
    assert bank.capacities() == {4: 3} and bank.num_bytes == budget  # not 4: the budget caps the doubling
    version = bank.layout_version
    for extra in (adapter("d", 4), adapter("e", 8), adapter("f", 4, MLP, layers=(0,))):
        with pytest.raises(DeviceBudgetError):
            bank.add(extra, budget)
        assert bank.num_bytes == allocated(bank) == budget and bank.layout_version == version
    bank.remove(keys[1])
    with pytest.raises(DeviceBudgetError):  # a free slot, but MLP buffers for 3 slots do not fit
        bank.add(adapter("g", 4, MLP), budget)
    assert bank.add(adapter("h", 4), budget) == keys[1]


def test_out_of_device_memory_is_a_typed_refusal_and_the_bank_is_unchanged(monkeypatch):
    bank = new_bank()
    bank.add(adapter("a", 4))
    before = (bank.num_bytes, bank.capacities(), {k: v.data_ptr() for k, v in bank.buckets[4].a.items()})
    calls = []

    def zeros(*shape):
        calls.append(shape)
        if len(calls) > 1:  # the second buffer of the new projection set
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return torch.zeros(shape)

    monkeypatch.setattr(bank, "_zeros", zeros)
    with pytest.raises(DeviceBudgetError, match="out of device memory") as caught:
        bank.add(adapter("b", 4, MLP))
    assert isinstance(caught.value, AdapterUnavailableError)  # answered adapter_unavailable, not INTERNAL
    assert (bank.num_bytes, bank.capacities(), {k: v.data_ptr() for k, v in bank.buckets[4].a.items()}) == before


def test_a_tiny_first_adapter_does_not_size_the_bank_for_a_later_mlp_one():
    """The issue's case: capacity was sized from the first adapter (budget // its bytes), then every new
    projection got full-capacity buffers — an MLP adapter asked for many times the budget."""
    budget = 8 * slot_bytes(4, ATTN + MLP)
    device = DeviceCache(new_bank(), budget, CacheStats())
    tiny = adapter("tiny", 4, ("q_proj",), layers=(0,))
    device.insert(("tiny", 0), tiny)
    device.release(("tiny", 0))
    for i in range(6):
        device.insert((f"mlp{i}", 0), adapter(f"mlp{i}", 4, ATTN + MLP))
        assert device.num_bytes == allocated(device.bank) <= budget
    assert device.bank.capacities()[4] <= 8


@pytest.mark.parametrize(
    ("budget_slots", "ops", "resident"),
    [
        # two small adapters leave; the big one's slot-wide buffers need the bucket to themselves
        (4, ["+a", "+b", "-a", "-b", "+B"], ["B"]),
        # pinned a stays; B needs the room of b and c
        (7, ["+a", "+b", "+c", "-b", "-c", "+B"], ["a", "B"]),
        # b pinned at slot 1, a at slot 0 released: only a goes
        (7, ["+a", "+b", "-a", "+B"], ["b", "B"]),
        # a hit refreshes a: b, the least recently used, goes first — and is enough
        (7, ["+a", "+b", "-b", "-a", "+a", "-a", "+B"], ["a", "B"]),
    ],
)
def test_device_tier_evicts_the_fewest_lru_slots_that_make_room(budget_slots, ops, resident):
    """Small: rank 4, q/v; big (upper case): rank 4, q/v + MLP in both layers."""
    budget = budget_slots * slot_bytes(4, ATTN)
    device = DeviceCache(new_bank(), budget, CacheStats())
    assert budget >= slot_bytes(4, ATTN + MLP)  # room for a big slot, but not beside every small one
    for op in ops:
        name, key = op[1], (op[1], 0)
        if op[0] == "+":
            targets = ATTN + MLP if name.isupper() else ATTN
            if device.acquire(key) is None:
                made = adapter(name, 4, targets)
                assert device.can_fit(made)
                device.insert(key, made)
        else:
            device.release(key)
        assert device.num_bytes == allocated(device.bank) <= budget
    assert sorted(k for k, _ in device.keys()) == sorted(resident)


def test_device_tier_refuses_when_pinned_slots_leave_no_room():
    budget = 2 * slot_bytes(4, ATTN)
    device = DeviceCache(new_bank(), budget, CacheStats())
    device.insert(("a", 0), adapter("a", 4))
    device.insert(("b", 0), adapter("b", 4))
    newcomer = adapter("c", 4)
    assert not device.can_fit(newcomer)
    with pytest.raises(DeviceBudgetError):
        device.insert(("c", 0), newcomer)
    assert [k for k, _ in device.keys()] == ["a", "b"] and device.num_bytes == budget
