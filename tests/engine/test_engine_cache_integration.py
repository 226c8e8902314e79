"""The adapter cache tiers inside the engine: prefetch, single-flight, waiting without blocking others,
pins released however a request ends, device budgets, typed load errors, deadlines, concurrency."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections import Counter

import pytest
import torch

from gpu_engine import engine as engine_module
from gpu_engine.adapter_ref import AdapterRef
from gpu_engine.config import EngineConfig
from gpu_engine.engine import Engine
from gpu_engine.engine_thread import EngineThread
from gpu_engine.types import FinishReason, GenerationRequest, SamplingParams
from gpu_engine.errors import AdapterCorruptError, AdapterNotFoundError, DeviceBudgetError, EngineError
from tests.engine.engine_helpers import Outcome, run_all
from tests.engine.test_engine_thread import Collector

PROMPT = "The quick dog runs over the river"
TIMEOUT_S = 30


class GatedStore:
    """Wraps the engine's real store: counts checkouts per version; a closed gate holds an id's loads."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.checkouts: Counter = Counter()
        self.gates: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def checkout(self, ref: AdapterRef):
        with self._lock:
            self.checkouts[(ref.adapter_id, ref.version)] += 1
        gate = self.gates.get(ref.adapter_id)
        if gate is not None:
            assert gate.wait(TIMEOUT_S), "gate never opened"
        with self.inner.checkout(ref) as path:
            yield path


@pytest.fixture
def make_engine(monkeypatch, tiny_model_dir, adapter_root):
    """make_engine(**config) -> (engine, gated store); the store wraps the configured one."""
    real_open_store = engine_module.open_store
    stores: list[GatedStore] = []

    def open_store(config, stats):
        stores.append(GatedStore(real_open_store(config, stats)))
        return stores[-1]

    monkeypatch.setattr(engine_module, "open_store", open_store)

    def make(root=adapter_root, **overrides):
        options = {"max_batch_size": 8, "max_step_tokens": 64, **overrides}
        engine = Engine(EngineConfig(str(tiny_model_dir), str(root), **options))
        return engine, stores[-1]

    yield make
    for store in stores:
        for gate in store.gates.values():
            gate.set()


def request(request_id: str, adapter: str | None, max_new_tokens: int = 6, **kw) -> GenerationRequest:
    return GenerationRequest(request_id, PROMPT, adapter, SamplingParams(max_new_tokens=max_new_tokens), **kw)


def step_until(engine: Engine, outcomes: dict[str, Outcome], done, max_steps: int = 500) -> None:
    for _ in range(max_steps):
        if done():
            return
        for event in engine.step():
            outcomes.setdefault(event.request_id, Outcome()).events.append(event)
    raise AssertionError("condition not reached")


def assert_nothing_pinned(engine: Engine) -> None:
    cache = engine.adapter_cache
    assert cache.device.pinned_keys() == [] and cache.host.pinned_keys() == []
    assert cache.num_blocked == 0 and engine.num_running == engine.num_waiting == 0


def test_requests_for_a_loading_adapter_share_one_load_and_do_not_delay_others(make_engine):
    engine, store = make_engine()
    store.gates["r8-qv"] = threading.Event()
    threads = [threading.Thread(target=engine.add_request, args=(request(f"a{i}", "r8-qv"),)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    engine.add_request(request("base", None))
    outcomes: dict[str, Outcome] = {}
    step_until(engine, outcomes, lambda: "base" in outcomes and outcomes["base"].events[-1].is_final)
    assert set(outcomes) == {"base"}  # the adapter's requests wait, silently
    assert engine.has_work() and not engine.has_runnable_work()  # an idle runner would sleep now
    store.gates["r8-qv"].set()
    step_until(engine, outcomes, lambda: not engine.has_work())
    tokens = {tuple(outcomes[f"a{i}"].token_ids) for i in range(6)}
    assert len(tokens) == 1 and len(next(iter(tokens))) == 6
    assert store.checkouts == {("r8-qv", 0): 1}
    stats = engine.cache_stats.snapshot()
    assert stats["device"].misses == 1 and stats["device"].hits == 5 and stats["host"].loads == 1
    assert_nothing_pinned(engine)


def test_runner_sleeps_while_only_loads_are_pending_and_wakes_when_one_lands(make_engine):
    engine, store = make_engine()
    store.gates["r16-all"] = threading.Event()
    runner = EngineThread(engine)
    runner.start()
    try:
        sink, base = Collector(expected=1), Collector(expected=1)
        runner.submit(request("slow", "r16-all"), sink)
        runner.submit(request("base", None, max_new_tokens=3), base)
        base.wait()
        assert runner.num_outstanding == 1 and not sink.events  # base done, the adapter's load held
        store.gates["r16-all"].set()
        sink.wait()
        assert sink.finals()["slow"].finish_reason is FinishReason.LENGTH
    finally:
        runner.stop(timeout_s=5)


def test_the_sleeping_runner_expires_a_request_whose_adapter_never_arrives(make_engine):
    engine, store = make_engine()
    store.gates["r8-qv"] = threading.Event()
    runner = EngineThread(engine)
    runner.start()
    try:
        sink = Collector(expected=1)
        runner.submit(request("late", "r8-qv", deadline_s=time.time() + 0.2), sink)
        sink.wait()
        final = sink.finals()["late"]
        assert final.finish_reason is FinishReason.EXPIRED and final.completion_tokens == 0
        assert engine.adapter_cache.num_blocked == 0
    finally:
        runner.stop(timeout_s=5)


def test_pins_are_released_however_a_request_ends(make_engine, monkeypatch):
    engine, store = make_engine(max_batch_size=4)
    store.gates["r4-down"] = threading.Event()
    requests = [
        request("finishes", "r8-qv"),
        request("aborted-running", "r16-all", max_new_tokens=50),
        request("aborted-loading", "r4-down"),
        request("expired-loading", "r4-down", deadline_s=time.time() + 0.3),
        request("expired-waiting", "r8-attn", deadline_s=time.time() - 1),
        request("missing", "no-such-adapter"),
    ]
    for r in requests:
        engine.add_request(r)
    outcomes: dict[str, Outcome] = {}
    step_until(engine, outcomes, lambda: "aborted-running" in outcomes)
    engine.abort("aborted-running")
    engine.abort("aborted-loading")
    step_until(engine, outcomes, lambda: not engine.has_work())
    finals = {rid: o.final for rid, o in outcomes.items()}
    assert finals["finishes"].finish_reason is FinishReason.LENGTH
    assert finals["aborted-running"].finish_reason is FinishReason.CANCELLED
    assert finals["aborted-loading"].finish_reason is FinishReason.CANCELLED
    assert finals["expired-waiting"].finish_reason is FinishReason.EXPIRED
    assert finals["expired-loading"].finish_reason is FinishReason.EXPIRED
    assert outcomes["expired-loading"].token_ids == outcomes["expired-waiting"].token_ids == []
    assert finals["missing"].error_code == AdapterNotFoundError.code
    assert_nothing_pinned(engine)

    def explode(*args, **kwargs):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(engine_module, "run_step", explode)
    failed = run_all(engine, [request("step-fails", "r8-qv")])["step-fails"]
    assert failed.final.error_code == EngineError.code
    assert_nothing_pinned(engine)


@pytest.mark.parametrize("budget_fraction", [0.0, 0.6])
def test_a_small_device_budget_evicts_and_gives_the_same_tokens(make_engine, budget_fraction):
    names = ["r4-qv", "r8-qv", "r16-all", "r8-attn", "r4-down", "r32-ko"]
    reference, _ = make_engine()
    requests = [request(f"{name}:{i}", name, max_new_tokens=5) for i in range(2) for name in names]
    expected = {rid: o.token_ids for rid, o in run_all(reference, requests).items()}
    sizes = [reference.adapter_cache.device.size((name, 0)) for name in names]
    budget = max(max(sizes), int(budget_fraction * sum(sizes)))  # from one adapter at a time to most of them
    engine, _ = make_engine(device_cache_bytes=budget)
    for r in requests:
        engine.add_request(r)
    outcomes: dict[str, Outcome] = {}
    for _ in range(1000):
        if not engine.has_work():
            break
        for event in engine.step():
            outcomes.setdefault(event.request_id, Outcome()).events.append(event)
        assert engine.adapter_cache.device.num_bytes <= budget
    assert {rid: o.token_ids for rid, o in outcomes.items()} == expected
    stats = engine.cache_stats.snapshot()["device"]
    assert stats.evictions > 0 and stats.misses + stats.hits == len(requests)
    assert_nothing_pinned(engine)


def test_an_adapter_larger_than_the_device_budget_is_refused_others_run(make_engine):
    engine, _ = make_engine(device_cache_bytes=20_000)  # r8-qv is 14 kB, r16-all 128 kB
    outcomes = run_all(engine, [request("big", "r16-all"), request("small", "r8-qv"), request("base", None)])
    assert outcomes["big"].final.error_code == DeviceBudgetError.code  # answered adapter_unavailable on the wire
    assert "budget" in outcomes["big"].final.error_message
    assert outcomes["small"].final.finish_reason is outcomes["base"].final.finish_reason is FinishReason.LENGTH
    assert_nothing_pinned(engine)


def test_out_of_device_memory_for_a_bank_slot_refuses_that_adapter_others_run(make_engine, monkeypatch):
    """An allocation failure while placing an adapter (inside `schedule`) answers its requests with a typed
    error; the step goes on, and the other requests run."""
    engine, _ = make_engine()
    allocate = engine.bank._zeros

    def zeros(*shape):  # (capacity, rank, features): the rank-16 bucket cannot be allocated
        if shape[1] == 16:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return allocate(*shape)

    monkeypatch.setattr(engine.bank, "_zeros", zeros)
    outcomes = run_all(engine, [request("big", "r16-all"), request("small", "r8-qv"), request("base", None)])
    assert outcomes["big"].final.error_code == DeviceBudgetError.code
    assert "out of device memory" in outcomes["big"].final.error_message
    assert outcomes["small"].final.finish_reason is outcomes["base"].final.finish_reason is FinishReason.LENGTH
    assert 16 not in engine.bank.buckets
    assert_nothing_pinned(engine)


def test_held_adapters_stay_resident_until_superseded(make_engine, adapter_root):
    engine, _ = make_engine(device_cache_bytes=20_000)
    key = engine.load_adapter("r8-qv")
    assert engine.adapter_cache.device.pinned_keys() == [("r8-qv", 0)]
    outcome = run_all(engine, [request("other", "r4-qv")])["other"]
    assert outcome.final.error_code == DeviceBudgetError.code  # the held one leaves no room
    assert engine.load_adapter("r8-qv") == key
    engine.register_adapter(AdapterRef("r8-qv", 1, (adapter_root / "r8-qv").as_uri()))
    engine.step()  # applies the invalidation: version 0 is no longer held
    assert engine.adapter_cache.device.keys() == [] and engine.adapter_cache.device.pinned_keys() == []


def test_a_corrupt_adapter_fails_its_requests_with_a_typed_error_others_proceed(make_engine, adapter_root, tmp_path):
    for name in ("r8-qv", "r16-all"):
        shutil.copytree(adapter_root / name, tmp_path / name)
    shutil.copytree(adapter_root / "r8-qv", tmp_path / "broken")
    weights = tmp_path / "broken" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    engine, store = make_engine(root=tmp_path)
    requests = [request(f"broken{i}", "broken") for i in range(3)]
    requests += [request("ok-a", "r8-qv"), request("ok-b", "r16-all"), request("base", None)]
    outcomes = run_all(engine, requests)
    for i in range(3):
        final = outcomes[f"broken{i}"].final
        assert final.finish_reason is FinishReason.ERROR and final.error_code == AdapterCorruptError.code
    for rid in ("ok-a", "ok-b", "base"):
        assert outcomes[rid].final.finish_reason is FinishReason.LENGTH
    assert store.checkouts[("broken", 0)] == 1  # the failure is shared, and remembered
    again = run_all(engine, [request("broken-again", "broken")])["broken-again"]
    assert again.final.error_code == AdapterCorruptError.code and store.checkouts[("broken", 0)] == 1
    assert_nothing_pinned(engine)


def test_registry_and_prefetch_calls_from_other_threads_while_the_engine_steps(make_engine, adapter_root):
    engine, _ = make_engine(device_cache_bytes=300_000)
    runner = EngineThread(engine)
    runner.start()
    names = ["r4-qv", "r8-qv", "r16-all", "r8-attn", "r4-down"]
    stop = threading.Event()

    def register_loop() -> None:
        version = 1
        while not stop.is_set():
            runner.register_adapter(AdapterRef("r8-qv", version, (adapter_root / "r8-qv").as_uri()))
            version += 1
            time.sleep(0.002)

    def prefetch_loop() -> None:
        i = 0
        while not stop.is_set():
            runner.prefetch(names[i % len(names)])
            i += 1
            time.sleep(0.001)

    helpers = [threading.Thread(target=register_loop), threading.Thread(target=prefetch_loop)]
    for thread in helpers:
        thread.start()
    try:
        sink = Collector(expected=30)
        for i in range(30):
            runner.submit(request(f"r{i}", names[i % len(names)], max_new_tokens=4), sink)
        sink.wait()
    finally:
        stop.set()
        for thread in helpers:
            thread.join()
        runner.stop(timeout_s=5)
    assert {e.finish_reason for e in sink.finals().values()} == {FinishReason.LENGTH}
    engine.step()  # apply the last invalidations
    assert_nothing_pinned(engine)
    assert all(engine.adapter_cache.registry.is_current(key) for key in engine.adapter_cache.device.keys())


def test_final_events_name_the_tier_the_adapter_was_in_on_arrival(make_engine):
    """store (loaded for it) → device (resident) → host (evicted from the device only); None for the base."""
    engine, _ = make_engine(device_cache_bytes=140_000)  # r16-all (131 kB) or r8-qv (14 kB), not both
    tiers = []
    for index, adapter in enumerate(["r8-qv", "r8-qv", "r16-all", "r8-qv", None]):
        outcome = run_all(engine, [request(f"t{index}", adapter, max_new_tokens=2)])[f"t{index}"]
        assert outcome.final.finish_reason is FinishReason.LENGTH
        tiers.append(outcome.final.adapter_tier)
    assert tiers == ["store", "device", "store", "host", None]
