"""Cache tier bookkeeping: LRU-by-bytes eviction order, pins, stale versions, single-flight loads."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter

import pytest
import torch

from gpu_engine import adapter_loader
from gpu_engine.adapter_loader import AdapterLoader
from gpu_engine.adapter_ref import AdapterRef
from gpu_engine.adapter_registry import AdapterRegistry
from gpu_engine.adapters import LoraAdapter, LoraWeights
from gpu_engine.byte_lru import ByteLRU
from gpu_engine.cache_stats import CacheStats
from gpu_engine.device_cache import DeviceCache
from gpu_engine.errors import AdapterCorruptError, AdapterNotFoundError, AdapterUnavailableError
from gpu_engine.host_cache import HostCache
from gpu_engine.lora_bank import LoraBank
from gpu_engine.model_spec import ModelSpec

SPEC = ModelSpec(
    arch="llama", num_layers=2, hidden_size=32, intermediate_size=48, num_heads=4, num_kv_heads=2, head_dim=8,
    vocab_size=64, max_position_embeddings=128, sliding_windows=(None, None), eos_token_ids=(2,),
)
TIMEOUT_S = 10
MAX_PENDING = 6

# ops: ("put", key, bytes) | ("put_stale", key, bytes) | ("get", key) | ("pin", key) | ("unpin", key)
#      | ("invalidate", keys); expected: resident keys (LRU first) and evicted keys in eviction order
LRU_CASES = {
    "least recently used goes first": (
        10, [("put", "a", 4), ("put", "b", 4), ("get", "a"), ("put", "c", 4)], ["a", "c"], ["b"],
    ),
    "as many as the newcomer's bytes need": (
        10, [("put", "a", 2), ("put", "b", 2), ("put", "c", 2), ("put", "d", 7)], ["c", "d"], ["a", "b"],
    ),
    "a pinned entry is skipped": (
        10, [("put", "a", 5), ("pin", "a"), ("put", "b", 5), ("put", "c", 5)], ["a", "c"], ["b"],
    ),
    "pinned entries may overflow the budget": (
        10, [("pin", "a"), ("put", "a", 6), ("pin", "b"), ("put", "b", 6)], ["a", "b"], [],
    ),
    "an unpinned newcomer larger than the budget leaves at once": (
        10, [("put", "a", 3), ("put", "big", 11)], [], ["a", "big"],
    ),
    "a pin taken before the put protects the entry": (
        10, [("put", "a", 3), ("pin", "x"), ("put", "x", 20)], ["x"], ["a"],
    ),
    "unpinning leaves a fresh entry cached": (
        10, [("pin", "a"), ("put", "a", 4), ("unpin", "a"), ("put", "b", 4)], ["a", "b"], [],
    ),
    "invalidate evicts unpinned now, pinned at their last unpin": (
        None, [("put", "a", 1), ("pin", "a"), ("pin", "a"), ("put", "b", 1), ("put", "c", 1),
               ("invalidate", ("a", "b")), ("unpin", "a")], ["c", "a"], ["b"],
    ),
    "the last unpin of a stale entry evicts it": (
        None, [("put", "a", 1), ("pin", "a"), ("invalidate", ("a",)), ("unpin", "a")], [], ["a"],
    ),
    "a stale newcomer stays only while pinned": (
        None, [("put_stale", "a", 1), ("pin", "b"), ("put_stale", "b", 1)], ["b"], ["a"],
    ),
    "unlimited budget never evicts": (
        None, [("put", k, 10**9) for k in "abcd"], ["a", "b", "c", "d"], [],
    ),
}


@pytest.mark.parametrize(("budget", "ops", "resident", "evicted"), LRU_CASES.values(), ids=LRU_CASES.keys())
def test_byte_lru_eviction_order(budget, ops, resident, evicted):
    lru: ByteLRU[str, str] = ByteLRU(budget)
    gone = []
    for op, key, *size in ops:
        if op in ("put", "put_stale"):
            gone += lru.put(key, key.upper(), size[0], stale=op == "put_stale")
        elif op == "get":
            assert lru.get(key) == key.upper()
        elif op == "pin":
            lru.pin(key)
        elif op == "unpin":
            gone += lru.unpin(key)
        else:
            gone += lru.invalidate(lambda k, keys=key: k in keys)
    assert lru.keys() == resident
    assert [k for k, _ in gone] == evicted and all(v == k.upper() for k, v in gone)
    assert lru.num_bytes == sum(size[0] for op, k, *size in ops if op.startswith("put") and k in resident)


def test_byte_lru_refuses_unbalanced_pins_and_double_puts():
    lru: ByteLRU[str, int] = ByteLRU(10)
    with pytest.raises(ValueError):
        lru.unpin("a")
    lru.put("a", 1, 1)
    with pytest.raises(ValueError):
        lru.put("a", 1, 1)
    lru.pin("a")
    assert lru.can_fit(9) and not lru.can_fit(10)


def make_adapter(name: str, rank: int = 4, targets=("q_proj", "v_proj"), seed: int = 0) -> LoraAdapter:
    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for layer in range(SPEC.num_layers):
        for proj in targets:
            in_f, out_f = SPEC.projection_shape(proj)
            weights[(layer, proj)] = LoraWeights(
                torch.randn(rank, in_f, generator=generator), torch.randn(rank, out_f, generator=generator)
            )
    return LoraAdapter(name, rank, weights)


ADAPTER_BYTES = make_adapter("x").num_bytes  # every adapter below has this size


@pytest.mark.parametrize(
    ("budget_adapters", "ops", "resident"),
    [
        (2, ["+a", "+b", "-a", "-b", "+c"], ["b", "c"]),  # a was released first: least recently used
        (2, ["+a", "+b", "-b", "-a", "+c"], ["a", "c"]),  # b was
        (2, ["+a", "+b", "-b", "+c"], ["a", "c"]),  # a is pinned: b goes
        (2, ["+a", "-a", "+b", "-b", "+a", "-a", "+c"], ["a", "c"]),  # a hit refreshes a
        (3, ["+a", "+b", "+c", "-a", "-b", "-c", "+d"], ["b", "c", "d"]),
    ],
)
def test_device_tier_evicts_lru_unpinned_slots_and_reuses_them(budget_adapters, ops, resident):
    stats = CacheStats()
    bank = LoraBank(SPEC, torch.float32, torch.device("cpu"))
    device = DeviceCache(bank, budget_adapters * ADAPTER_BYTES, stats)
    adapters = {name: make_adapter(name, seed=i) for i, name in enumerate("abcd")}
    slots = {}
    for op in ops:
        key = (op[1], 0)
        if op[0] == "+":
            slot = device.acquire(key)
            if slot is None:
                assert device.can_fit(adapters[op[1]])
                slot = device.insert(key, adapters[op[1]])
            slots[op[1]] = slot
        else:
            device.release(key)
    assert [k for k, _ in device.keys()] == resident
    assert device.num_bytes == len(resident) * ADAPTER_BYTES <= budget_adapters * ADAPTER_BYTES
    assert bank.capacities()[4] >= budget_adapters  # reserved from the budget: no growth on the way
    for name in resident:  # what is resident sits in its slot, bit for bit
        rank, slot = slots[name]
        torch.testing.assert_close(bank.buckets[rank].a[(1, "v_proj")][slot], adapters[name].weights[(1, "v_proj")].a)
    free = bank.buckets[4].free_slots
    for slot in free:  # evicted slots hold zeros
        assert not bank.buckets[4].a[(0, "q_proj")][slot].any()
    snap = stats.snapshot()["device"]
    assert snap.entries == len(resident) and snap.evictions == snap.misses - len(resident)


def test_device_tier_cannot_fit_while_every_slot_is_pinned():
    bank = LoraBank(SPEC, torch.float32, torch.device("cpu"))
    device = DeviceCache(bank, 2 * ADAPTER_BYTES, CacheStats())
    device.insert(("a", 0), make_adapter("a"))
    device.insert(("b", 0), make_adapter("b"))
    assert not device.can_fit(make_adapter("c"))
    device.release(("a", 0))
    assert device.can_fit(make_adapter("c"))


def test_device_invalidation_waits_for_the_last_pin():
    bank = LoraBank(SPEC, torch.float32, torch.device("cpu"))
    device = DeviceCache(bank, None, CacheStats())
    device.insert(("a", 1), make_adapter("a"))
    device.insert(("b", 1), make_adapter("b"))
    device.release(("b", 1))
    device.invalidate(lambda key: True)
    assert device.keys() == [("a", 1)]
    assert device.acquire(("a", 1)) is not None  # still served to whoever started on it
    device.release(("a", 1))
    device.release(("a", 1))
    assert device.keys() == [] and len(bank.buckets[4].free_slots) == bank.capacities()[4]


def test_host_tier_keeps_pinned_adapters_over_budget_and_counts_evictions():
    stats = CacheStats()
    host = HostCache(ADAPTER_BYTES, stats)
    host.pin(("a", 0))
    host.put(("a", 0), make_adapter("a"))
    host.put(("b", 0), make_adapter("b"))  # over budget, unpinned: gone at once
    assert host.keys() == [("a", 0)]
    host.unpin(("a", 0))
    host.put(("c", 0), make_adapter("c"))
    assert host.keys() == [("c", 0)]
    snap = stats.snapshot()["host"]
    assert (snap.evictions, snap.entries, snap.bytes) == (2, 1, ADAPTER_BYTES)


class GatedStore:
    """Counts checkouts per version; each blocks until `gate` is set. `broken` ids fail to read."""

    def __init__(self) -> None:
        self.checkouts: Counter = Counter()
        self.gate = threading.Event()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def checkout(self, ref: AdapterRef):
        with self._lock:
            self.checkouts[(ref.adapter_id, ref.version)] += 1
        assert self.gate.wait(TIMEOUT_S)
        if ref.adapter_id.startswith("missing"):
            raise AdapterNotFoundError("no such adapter")
        yield ref.adapter_id


def read_fake(path, ref: AdapterRef) -> LoraAdapter:
    if ref.adapter_id == "corrupt":
        raise AdapterCorruptError("bad safetensors header")
    return make_adapter(ref.adapter_id, seed=ref.version)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def loader_parts():
    store, host, done = GatedStore(), HostCache(None, CacheStats()), []
    finished = threading.Semaphore(0)

    def on_done(key, error):
        done.append((key, error))
        finished.release()

    clock = Clock()
    loader = AdapterLoader(
        store, read_fake, host, CacheStats(), 4, on_done, max_pending=MAX_PENDING, failure_ttl_s=3.0, clock=clock
    )
    yield loader, store, host, done, finished, clock
    store.gate.set()
    loader.shutdown()


def test_concurrent_requests_for_one_cold_adapter_trigger_one_load(loader_parts):
    loader, store, host, done, finished, _ = loader_parts
    ref = AdapterRef("a", 3)
    threads = [threading.Thread(target=loader.request, args=(ref,)) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    loader.request(AdapterRef("b"))  # another adapter loads beside it
    store.gate.set()
    assert finished.acquire(timeout=TIMEOUT_S) and finished.acquire(timeout=TIMEOUT_S)
    assert store.checkouts == {("a", 3): 1, ("b", 0): 1}
    assert sorted(key for key, _ in done) == [("a", 3), ("b", 0)] and all(e is None for _, e in done)
    assert ("a", 3) in host and loader.request(ref) is None and store.checkouts[("a", 3)] == 1


@pytest.mark.parametrize(("adapter_id", "error_type"), [("corrupt", AdapterCorruptError), ("missing", AdapterNotFoundError)])
def test_a_failed_load_is_remembered_briefly_then_retried(loader_parts, adapter_id, error_type):
    loader, store, host, done, finished, clock = loader_parts
    store.gate.set()
    ref = AdapterRef(adapter_id)
    assert loader.request(ref) is None
    assert finished.acquire(timeout=TIMEOUT_S)
    assert isinstance(done[0][1], error_type)
    assert isinstance(loader.request(ref), error_type)  # remembered: no new attempt
    assert store.checkouts[(adapter_id, 0)] == 1
    clock.now += 3.1
    assert loader.request(ref) is None  # a new attempt
    assert finished.acquire(timeout=TIMEOUT_S)
    assert store.checkouts[(adapter_id, 0)] == 2 and (adapter_id, 0) not in host


def test_pending_loads_are_bounded_and_the_excess_is_refused_at_once(loader_parts):
    """Thousands of unknown ids must not queue thousands of store lookups."""
    loader, store, host, done, finished, _ = loader_parts
    refs = [AdapterRef(f"id-{n}") for n in range(50)]
    results = [loader.request(ref) for ref in refs]  # the store is gated: nothing finishes meanwhile
    assert results[:MAX_PENDING] == [None] * MAX_PENDING and loader.num_loading == MAX_PENDING
    assert all(isinstance(r, AdapterUnavailableError) for r in results[MAX_PENDING:])
    assert loader.request(refs[0]) is None  # joining a pending load is always fine
    store.gate.set()
    for _ in range(MAX_PENDING):
        assert finished.acquire(timeout=TIMEOUT_S)
    assert loader.num_remembered_failures == 0  # a refusal for load is not a failure to remember
    assert loader.request(refs[-1]) is None  # room again
    assert finished.acquire(timeout=TIMEOUT_S) and ("id-49", 0) in host


def test_remembered_failures_expire_and_are_capped(loader_parts, monkeypatch):
    loader, store, _, _, finished, clock = loader_parts
    monkeypatch.setattr(adapter_loader, "MAX_REMEMBERED_FAILURES", 4)
    store.gate.set()

    def fail(adapter_id: str) -> None:
        assert loader.request(AdapterRef(adapter_id)) is None
        assert finished.acquire(timeout=TIMEOUT_S)

    for n in range(10):  # all within the ttl: only the newest 4 are kept
        fail(f"missing-{n}")
    assert loader.num_remembered_failures == 4
    assert isinstance(loader.request(AdapterRef("missing-9")), AdapterNotFoundError)
    fail("missing-0")  # the oldest was forgotten: tried again
    clock.now += 3.1
    fail("missing-x")  # remembering one more forgets every expired one
    assert loader.num_remembered_failures == 1


def test_wait_blocks_until_the_shared_load_ends(loader_parts):
    loader, store, host, *_ = loader_parts
    results = []
    waiter = threading.Thread(target=lambda: results.append(loader.wait(AdapterRef("a"), TIMEOUT_S)))
    waiter.start()
    assert loader.request(AdapterRef("a")) is None  # joins the waiter's load
    store.gate.set()
    waiter.join(TIMEOUT_S)
    assert results == [None] and ("a", 0) in host and store.checkouts[("a", 0)] == 1


def test_registry_resolves_versions_and_retirement():
    registry = AdapterRegistry()
    assert registry.resolve("x") == AdapterRef("x") and registry.is_current(("x", 0))
    registry.register(AdapterRef("x", 2, "file:///tmp/x2"))
    assert registry.resolve("x").version == 2 and not registry.is_current(("x", 0))
    registry.retire("x")
    with pytest.raises(AdapterNotFoundError):
        registry.resolve("x")
    assert registry.current_version("x") is None
    registry.register(AdapterRef("x", 3))
    assert registry.resolve("x").version == 3
    with pytest.raises(AdapterNotFoundError):
        registry.resolve("../escape")
