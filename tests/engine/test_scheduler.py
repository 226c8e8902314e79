"""Scheduling across adapters: VTC fairness, the distinct-adapter cap, the admit hook, deadlines.

Pure Python with fake sequences; a `Sim` plays the engine (feeds chunks, samples token 0, finishes a
sequence after `max_new_tokens`).
"""

from __future__ import annotations

from collections import Counter

import pytest

from gpu_engine.fairness import DECODE_WEIGHT, PREFILL_WEIGHT
from gpu_engine.scheduler import Scheduler, tenant_of
from gpu_engine.seq_state import SeqState
from gpu_engine.types import GenerationRequest, SamplingParams


def make_seq(rid: str, adapter: str | None = None, prompt_len: int = 4, max_new: int = 4,
             deadline: float | None = None) -> SeqState:
    request = GenerationRequest(rid, "p", adapter_id=adapter, sampling=SamplingParams(max_new_tokens=max_new),
                                deadline_s=deadline)
    return SeqState.from_prompt(request, list(range(prompt_len)), None)


class Sim:
    """Drives a Scheduler the way the engine does and records what happened."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.admitted: list[str] = []  # request ids in admission order
        self.admitted_at: dict[str, int] = {}  # request id -> step of admission
        self.finished: list[str] = []
        self.steps = 0
        self.running_sizes: list[int] = []
        self.step_adapters: list[set[str]] = []  # distinct non-None adapters running in each step

    def add(self, *seqs: SeqState) -> None:
        for seq in seqs:
            self.scheduler.add(seq)

    def step(self) -> list[tuple[str, int]]:
        chunks = self.scheduler.schedule()
        self.running_sizes.append(self.scheduler.num_running)
        self.step_adapters.append({a for c in chunks if (a := tenant_of(c.seq)) is not None})
        for chunk in chunks:
            seq = chunk.seq
            if seq.num_computed == 0:
                self.admitted.append(seq.request_id)
                self.admitted_at[seq.request_id] = self.steps
            completes = chunk.completes
            seq.num_computed += chunk.num_tokens
            if completes:
                seq.append_token(0)
                if seq.num_new_tokens >= seq.request.sampling.max_new_tokens:
                    self.scheduler.finish(seq)
                    self.finished.append(seq.request_id)
        self.steps += 1
        return [(c.seq.request_id, c.num_tokens) for c in chunks]

    def run(self, max_steps: int = 10_000) -> None:
        while self.scheduler.has_unfinished():
            assert self.steps < max_steps, "scheduler made no progress"
            self.step()


# --- fairness ------------------------------------------------------------------------------------


def hot_and_cold() -> list[SeqState]:
    """A hot adapter with 100 queued requests, then 5 cold adapters with 2 each (arriving later)."""
    hot = [make_seq(f"hot{i}", "hot") for i in range(100)]
    cold = [make_seq(f"c{a}-{i}", f"cold{a}") for a in range(5) for i in range(2)]
    return hot + cold


@pytest.mark.parametrize(
    ("fairness", "cold_admitted_among_first", "cold_admitted_not_before"),
    [
        ("vtc", 12, 0),  # every cold request is admitted within the first few slots
        ("fifo", 110, 100),  # plain arrival order: the cold ones wait behind all 100 hot ones
    ],
)
def test_hot_adapter_cannot_starve_cold_ones(fairness, cold_admitted_among_first, cold_admitted_not_before):
    sim = Sim(Scheduler(4, 64, fairness=fairness))
    sim.add(*hot_and_cold())
    sim.run()
    cold_positions = [i for i, rid in enumerate(sim.admitted) if rid.startswith("c")]
    assert len(cold_positions) == 10 and len(sim.finished) == 110
    assert max(cold_positions) < cold_admitted_among_first
    assert min(cold_positions) >= cold_admitted_not_before


def test_vtc_shares_slots_between_backlogged_tenants():
    """Two backlogged adapters with equal requests get equal service while both have work."""
    sim = Sim(Scheduler(4, 64))
    sim.add(*[make_seq(f"a{i}", "a") for i in range(40)], *[make_seq(f"b{i}", "b") for i in range(40)])
    for _ in range(40):
        sim.step()
    counts = Counter(rid[0] for rid in sim.admitted)
    assert abs(counts["a"] - counts["b"]) <= 1
    counters = sim.scheduler.counters()
    assert abs(counters["a"] - counters["b"]) <= 4 * (PREFILL_WEIGHT * 4 + DECODE_WEIGHT)


def test_fifo_within_a_tenant_and_ties_by_arrival():
    sim = Sim(Scheduler(1, 8))
    sim.add(make_seq("x1", "x"), make_seq("y1", "y"), make_seq("x2", "x"), make_seq("n1", None))
    sim.run()
    # all counters start equal: ties go to the earliest arrival, then the least-served tenant
    assert sim.admitted == ["x1", "y1", "n1", "x2"]


@pytest.mark.parametrize(
    ("prompt_len", "budget", "expected_counters"),
    [
        # prefill of 4 (+1 sampled token), then 3 decodes: 4*wp + 4*wq
        (4, 8, [4 * PREFILL_WEIGHT + DECODE_WEIGHT, 4 * PREFILL_WEIGHT + 2 * DECODE_WEIGHT]),
        # chunked prefill: prompt tokens are charged as they are fed, the sampled token at the end
        (10, 4, [4 * PREFILL_WEIGHT, 8 * PREFILL_WEIGHT, 10 * PREFILL_WEIGHT + DECODE_WEIGHT]),
    ],
)
def test_counters_charge_prompt_and_output_tokens(prompt_len, budget, expected_counters):
    sim = Sim(Scheduler(1, budget))
    sim.add(make_seq("r", "a", prompt_len=prompt_len))
    seen = []
    for _ in expected_counters:
        sim.step()
        seen.append(sim.scheduler.counters()["a"])
    assert seen == expected_counters


def test_lift_on_rearrival():
    sched = Scheduler(2, 64)
    sim = Sim(sched)
    sim.add(make_seq("a1", "a", max_new=50))
    for _ in range(5):
        sim.step()
    a_counter = sched.counters()["a"]
    assert a_counter > 0
    # a new tenant starts at the least-served active tenant's counter, not at 0
    sim.add(b1 := make_seq("b1", "b", max_new=1))
    assert sched.counters()["b"] == a_counter
    sim.step()  # b1 is admitted, prefilled, and finishes: b goes idle
    assert "b1" in sim.finished
    for _ in range(5):
        sim.step()
    assert sched.counters()["b"] < sched.counters()["a"]  # a kept being served while b was idle
    # b's idle time is not banked: on re-arrival it is lifted to a's counter again
    sim.add(make_seq("b2", "b", max_new=1))
    assert sched.counters()["b"] == sched.counters()["a"]
    assert b1.kv_blocks == []


def test_lift_when_nothing_is_active_uses_the_last_idle_counter():
    sched = Scheduler(2, 64)
    sim = Sim(sched)
    sim.add(make_seq("a1", "a", max_new=3))
    sim.run()
    a_counter = sched.counters()["a"]
    sim.add(make_seq("new1", "new"))  # a never-seen tenant arrives after everyone went idle
    assert sched.counters()["new"] == a_counter


def test_a_better_served_idle_tenant_keeps_its_counter():
    sched = Scheduler(1, 64)
    sim = Sim(sched)
    sim.add(make_seq("a1", "a", max_new=20), make_seq("b1", "b", max_new=1))
    sim.step()  # a1 runs alone (one slot)
    sim.step()  # still a1
    sim.add(make_seq("c1", "c", max_new=1))
    # lifting never lowers a counter: c is lifted to min(active) = b's counter, a keeps its own
    assert sched.counters()["c"] == sched.counters()["b"] < sched.counters()["a"]


# --- the distinct-adapter cap ----------------------------------------------------------------------


@pytest.mark.parametrize("fairness", ["vtc", "fifo"])
@pytest.mark.parametrize(("cap", "first_step_adapters"), [(1, 1), (2, 2), (3, 3), (None, 4)])
def test_cap_limits_distinct_adapters_per_step(fairness, cap, first_step_adapters):
    sim = Sim(Scheduler(16, 256, max_adapters_per_step=cap, fairness=fairness))
    sim.add(*[make_seq(f"{a}{i}", a) for a in "abcd" for i in range(3)])
    sim.add(make_seq("base1"), make_seq("base2"))  # the base model does not count against the cap
    sim.step()
    assert len(sim.step_adapters[0]) == first_step_adapters
    assert {"base1", "base2"} <= set(sim.admitted)
    sim.run()
    assert len(sim.finished) == 14
    assert max(len(adapters) for adapters in sim.step_adapters) <= (cap or 4)


def test_running_sequences_are_never_preempted_by_the_cap():
    sim = Sim(Scheduler(4, 64, max_adapters_per_step=1))
    sim.add(make_seq("a1", "a", max_new=6), make_seq("b1", "b"))
    sim.step()
    assert sim.admitted == ["a1"]
    for _ in range(5):
        sim.step()
    assert sim.finished == ["a1"] and sim.admitted == ["a1"]  # b1 waited while a1 ran
    sim.step()
    assert sim.admitted_at["b1"] == 6  # right after a1 left


@pytest.mark.parametrize(
    ("fairness", "cold_admitted_by_step"),
    [
        ("vtc", 10),  # the running hot adapter is made to drain, then the cold one gets the cap
        ("fifo", None),  # arrival order skips the cap-blocked request: it starves while hot keeps arriving
    ],
)
def test_cap_with_a_hot_adapter_that_keeps_arriving(fairness, cold_admitted_by_step):
    sim = Sim(Scheduler(4, 16, max_adapters_per_step=1, fairness=fairness))
    # staggered lengths, so the hot adapter always has something running unless it is made to drain
    sim.add(*[make_seq(f"hot{i}", "hot", max_new=3 + i % 4) for i in range(8)], make_seq("cold", "cold"))
    n = 8
    for _ in range(60):
        sim.add(*[make_seq(f"hot{i}", "hot", max_new=3 + i % 4) for i in (n, n + 1)])
        n += 2
        sim.step()
    if cold_admitted_by_step is None:
        assert "cold" not in sim.admitted
    else:
        assert sim.admitted_at["cold"] <= cold_admitted_by_step
        # ... without shrinking the hot adapter's batches to one request
        assert sum(sim.running_sizes) / len(sim.running_sizes) >= 3


def test_cap_keeps_batches_full_for_two_saturated_adapters():
    sim = Sim(Scheduler(8, 64, max_adapters_per_step=1))
    sim.add(*[make_seq(f"a{i}", "a") for i in range(40)], *[make_seq(f"b{i}", "b") for i in range(40)])
    sim.run()
    assert len(sim.finished) == 80
    assert max(len(adapters) for adapters in sim.step_adapters) == 1
    assert sum(sim.running_sizes) / len(sim.running_sizes) >= 5  # time-sliced, not one request at a time
    first_b = min(sim.admitted_at[f"b{i}"] for i in range(40))
    last_a = max(sim.admitted_at[f"a{i}"] for i in range(40))
    assert first_b < last_a  # b is not made to wait for all of a


# --- the admit hook ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fairness", ["vtc", "fifo"])
def test_admit_false_does_not_block_other_adapters(fairness):
    ready = {"slow": False}
    calls: Counter[str] = Counter()

    def admit(seq: SeqState) -> bool:
        calls[seq.request.adapter_id or ""] += 1
        return ready.get(seq.request.adapter_id, True)

    sim = Sim(Scheduler(8, 64, admit=admit, fairness=fairness))
    sim.add(*[make_seq(f"slow{i}", "slow", max_new=50) for i in range(20)])  # arrived first
    sim.add(make_seq("f1", "fast", max_new=50), make_seq("f2", "fast", max_new=50), make_seq("base", max_new=50))
    sim.step()
    assert sorted(sim.admitted) == ["base", "f1", "f2"]
    for _ in range(3):
        calls.clear()
        sim.step()
        assert calls["slow"] == 1  # one failed try per adapter per step, not one per queued request
    ready["slow"] = True
    sim.step()
    assert sum(rid.startswith("slow") for rid in sim.admitted) == 5  # the free slots
    assert sim.scheduler.num_waiting == 15


def test_admit_is_called_once_per_admission_when_ready():
    calls = []
    sim = Sim(Scheduler(4, 64, admit=lambda seq: calls.append(seq.request_id) or True))
    sim.add(*[make_seq(f"r{i}", "a") for i in range(6)])
    sim.run()
    assert calls == [f"r{i}" for i in range(6)]


def test_admit_false_with_cap_lets_another_adapter_take_the_place():
    sim = Sim(Scheduler(4, 64, max_adapters_per_step=1, admit=lambda seq: seq.request.adapter_id != "x"))
    sim.add(make_seq("x1", "x"), make_seq("y1", "y"))
    sim.step()
    assert sim.admitted == ["y1"]


# --- deadlines -----------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return self.now


def test_take_expired_returns_waiting_sequences_past_their_deadline():
    clock = FakeClock()
    sched = Scheduler(1, 64, clock=clock)
    sim = Sim(sched)
    sim.add(
        running := make_seq("running", deadline=1.0, max_new=100),
        soon := make_seq("soon", deadline=5.0),
        make_seq("later", deadline=10.0),
        make_seq("never"),
    )
    sim.step()
    assert sim.admitted == ["running"]
    assert sched.take_expired() == []
    clock.now = 7.0
    assert sched.take_expired() == [soon]  # the admitted one is past its deadline too, but runs on
    assert (sched.num_waiting, sched.num_running) == (2, 1)
    assert sched.take_expired() == []
    sched.finish(running)
    clock.now = 10.0
    sim.step()  # "later" is due: schedule() does not admit it, "never" goes instead
    assert sim.admitted == ["running", "never"]
    assert [s.request_id for s in sched.take_expired()] == ["later"]
    assert soon.kv_blocks == [] and sched.num_waiting == 0


def test_take_expired_is_free_without_deadlines():
    clock = FakeClock()
    sched = Scheduler(2, 64, clock=clock)
    sim = Sim(sched)
    sim.add(*[make_seq(f"r{i}") for i in range(5)])
    for _ in range(3):
        assert sched.take_expired() == []
        sim.step()
    assert clock.calls == 0


def test_finished_waiting_sequence_with_deadline_is_not_expired():
    clock = FakeClock()
    sched = Scheduler(1, 64, clock=clock)
    sched.add(a := make_seq("a", deadline=1.0))
    sched.finish(a)
    clock.now = 2.0
    assert sched.take_expired() == [] and not sched.has_unfinished()


def test_expired_not_yet_taken_still_counts_as_unfinished():
    clock = FakeClock()
    sched = Scheduler(1, 64, clock=clock)
    sched.add(a := make_seq("a", deadline=1.0))
    clock.now = 1.0
    assert sched.schedule() == []
    assert sched.has_unfinished() and sched.num_waiting == 1
    sched.finish(a)  # e.g. aborted before the engine took it
    assert not sched.has_unfinished() and sched.take_expired() == []


# --- the basics still hold -----------------------------------------------------------------------


@pytest.mark.parametrize("fairness", ["vtc", "fifo"])
@pytest.mark.parametrize(
    ("max_batch", "budget", "prompts", "expected_steps"),
    [
        (2, 4, {"a": 10}, [[("a", 4)], [("a", 4)], [("a", 2)], [("a", 1)]]),  # chunked prefill
        # decodes first, then the unfinished prefill, then newcomers while slots last
        (2, 4, {"a": 2, "b": 6, "c": 1}, [[("a", 2), ("b", 2)], [("a", 1), ("b", 3)], [("a", 1), ("b", 1)]]),
        (2, 16, {"a": 1, "b": 1, "c": 1}, [[("a", 1), ("b", 1)], [("a", 1), ("b", 1)]]),  # slot limit
    ],
)
def test_chunked_prefill_and_slot_limit_across_adapters(fairness, max_batch, budget, prompts, expected_steps):
    sim = Sim(Scheduler(max_batch, budget, fairness=fairness))
    for rid, prompt_len in prompts.items():
        sim.add(make_seq(rid, f"adapter-{rid}", prompt_len=prompt_len, max_new=100))
    assert [sim.step() for _ in expected_steps] == expected_steps


def test_finish_of_a_waiting_sequence_in_the_middle_of_its_queue():
    sim = Sim(Scheduler(1, 64))
    sim.add(*(seqs := [make_seq(f"r{i}", "a", max_new=1) for i in range(4)]))
    sim.scheduler.finish(seqs[1])
    sim.scheduler.finish(seqs[0])
    assert sim.scheduler.num_waiting == 2
    sim.run()
    assert sim.admitted == ["r2", "r3"]


def test_request_id_reused_after_finish():
    sched = Scheduler(1, 64)
    sched.add(old := make_seq("r", "a"))
    sched.finish(old)
    sched.add(new := make_seq("r", "a"))
    with pytest.raises(ValueError):
        sched.add(make_seq("r", "b"))
    assert [c.seq for c in sched.schedule()] == [new]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_batch_size": 0, "max_step_tokens": 4},
        {"max_batch_size": 4, "max_step_tokens": 2},
        {"max_batch_size": 4, "max_step_tokens": 8, "max_adapters_per_step": 0},
        {"max_batch_size": 4, "max_step_tokens": 8, "fairness": "lottery"},
    ],
)
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        Scheduler(**kwargs)


def test_many_tenants_and_requests_schedule_quickly():
    """Per-step work follows tenants with waiting work and the batch, not the whole queue."""
    import time

    sched = Scheduler(64, 2048, max_adapters_per_step=8)
    sim = Sim(sched)
    sim.add(*[make_seq(f"r{i}", f"t{i % 500}", max_new=2) for i in range(20_000)])
    start = time.perf_counter()
    for _ in range(50):
        sim.step()
    assert time.perf_counter() - start < 5.0
