"""bench.gpu keeps what it measured: JSON after the build, the warm-up and every round; a time budget."""

from __future__ import annotations

import json

from bench import gpu as bench


class FakeClock:
    """Seconds that pass only when a workload runs (one per run)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fake_runs(calls: list[str], clock: FakeClock) -> dict[str, object]:
    def run(name: str) -> float:
        calls.append(name)
        clock.now += 1.0
        return float(len(calls))

    return {name: (lambda name=name: run(name)) for name in ("base", "land_1")}


def test_every_round_is_reported_as_it_ends():
    calls, seen, clock = [], [], FakeClock()
    bench.measure(fake_runs(calls, clock), 3, None,
                  lambda samples, warmup_s, stopped: seen.append(({k: len(v) for k, v in samples.items()},
                                                                  warmup_s is not None, stopped)), clock)
    assert seen == [({"base": 0, "land_1": 0}, True, None)] + [({"base": n, "land_1": n}, False, None) for n in (1, 2, 3)]
    assert calls == ["base", "land_1", "base", "land_1", "land_1", "base", "base", "land_1"]  # warm-up, alternating


def test_no_round_starts_that_would_end_past_the_deadline():
    calls, seen, clock = [], [], FakeClock()
    # warm-up 0-2 s; round 1 would end at 4 s: it runs; round 2 would end at 6 s, past 5 s: it does not
    bench.measure(fake_runs(calls, clock), 5, 5.0, lambda s, w, stopped: seen.append(stopped), clock)
    assert seen == [None, None, "time budget: 1 of 5 rounds fit"]
    assert len(calls) == 4


def test_a_run_out_of_budget_still_leaves_its_environment_and_build(tmp_path):
    out = tmp_path / "gpu.json"
    code = bench.main(["--shape", "tiny", "--device", "cpu", "--dtype", "float32", "--batch-size", "4",
                       "--distinct", "1,4", "--heavy-distinct", "1", "--new-tokens", "2", "--time-budget-s", "0.01",
                       "--json", str(out)])
    assert code == 1  # not one round fitted
    result = json.loads(out.read_text())
    assert result["progress"]["phase"] == "stopped" and result["progress"]["rounds_done"] == 0
    assert result["progress"]["stopped"] == "time budget: 0 of 3 rounds fit"
    assert result["info"]["num_params"] > 0 and result["info"]["warmup_s"] > 0
    environment = result["environment"]
    assert environment["torch"] and environment["transformers"].startswith("5.") and "triton" in environment
    assert environment["attention_kernels"]["prefill"] and environment["attention_kernels"]["decode"]
    assert "tokens_per_s_median" not in result
