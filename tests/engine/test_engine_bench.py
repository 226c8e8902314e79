"""The engine benchmark's command line and arithmetic (the run itself is too slow for tests)."""

from __future__ import annotations

import pytest

from bench import engine as bench

FAKE = {
    "ours_base": 500.0, "hf_base": 400.0, "ours_landr8_32": 470.0, "ours_heavy_32": 380.0, "peft_32": 100.0,
    "ours_heavy_1": 490.0, "peft_1": 390.0, "ours_heavy_8": 400.0, "peft_8": 240.0,
}
CAPACITY = {"paged_running": 150.0, "slot_running": 16.0}


def test_help_exits_cleanly(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--help"])
    assert exit_info.value.code == 0
    assert "--json" in capsys.readouterr().out


def test_quick_shortens_the_run():
    args = bench.parse_args(["--quick"])
    assert (args.rounds, args.new_tokens) == (1, 8)


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        bench.parse_args(["--rounds", "0"])


def test_ratios_follow_the_issue_definitions():
    ratios = bench.summarize(FAKE, {"base_bytes": 300, "heavy_32_bytes": 100}, CAPACITY)
    assert ratios["paged_over_slot_capacity"] == pytest.approx(150 / 16)
    assert ratios["byte_limit_heavy_32"] == pytest.approx(0.75)
    assert ratios["heavy_fraction_of_byte_limit"] == pytest.approx(380 / 500 / 0.75)
    assert ratios["landr8_32_over_base"] == pytest.approx(0.94)
    assert ratios["ours32_over_peft32"] == pytest.approx(3.8)
    assert ratios["ours_base_over_hf_base"] == pytest.approx(1.25)


def test_table_and_plot(tmp_path, capsys):
    bench.print_table(FAKE, FAKE, bench.summarize(FAKE, {"base_bytes": 3, "heavy_32_bytes": 1}, CAPACITY),
                      {"eager": 900.0, "static": 300.0})
    out = capsys.readouterr().out
    assert "ours32_over_peft32" in out and "paged_over_slot_capacity" in out and "static 300" in out
    bench.save_plot(str(tmp_path / "plot.png"), FAKE)
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"


def test_cpu_clock_needs_one_thread():
    with pytest.raises(SystemExit):
        bench.parse_args(["--threads", "2"])
    args = bench.parse_args(["--threads", "2", "--clock", "wall"])
    assert (args.threads, args.clock) == (2, "wall")
    assert (bench.parse_args([]).threads, bench.parse_args([]).clock) == (1, "cpu")


def test_paged_capacity_beats_slots_under_one_kv_budget():
    from bench import engine_paged

    capacity = engine_paged.capacity(num_requests=200)
    assert capacity["slot_running"] == engine_paged.KV_BUDGET_POSITIONS // engine_paged.MAX_MODEL_LEN
    assert capacity["paged_running"] / capacity["slot_running"] >= 4


def test_host_step_times_are_measured_eager_and_with_the_device_step_stubbed(tmp_path):
    from bench import engine_paged
    from gpu_engine import step_runner

    real = step_runner.device_step
    host_us = engine_paged.host_step_us(tmp_path, batch_size=16, steps=4)
    assert step_runner.device_step is real
    assert host_us["eager"] > host_us["static"] > 0
