"""The cache benchmark's command line and arithmetic (the run itself is too slow for tests)."""

from __future__ import annotations

from collections import Counter

import pytest

from bench import cache as bench


def test_help_exits_cleanly(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--help"])
    assert exit_info.value.code == 0
    assert "--json" in capsys.readouterr().out


def test_quick_shortens_the_run_and_budgets_always_include_the_headline_one():
    args = bench.parse_args(["--quick"])
    assert (args.adapters, args.requests, args.rounds) == (200, 96, 1)
    assert bench.MAIN_BUDGET in args.budget_list
    assert bench.parse_args(["--budgets", "128,8"]).budget_list == [8, bench.MAIN_BUDGET, 128]


@pytest.mark.parametrize("argv", [["--rounds", "0"], ["--adapters", "64"], ["--budgets", "x"], ["--threads", "2"]])
def test_bad_arguments_are_refused(argv):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)


def test_zipf_sequence_is_seeded_and_skewed():
    ids = [f"a{i}" for i in range(1000)]
    sequence = bench.zipf_sequence(ids, 5000, 1.1, seed=3)
    assert sequence == bench.zipf_sequence(ids, 5000, 1.1, seed=3)
    counts = Counter(sequence).most_common()
    assert counts[0][1] > 20 * counts[len(counts) // 2][1]  # head far above the median adapter


def test_targets_have_their_directions():
    zipf = {"resident": {"tokens_per_s": 100.0}, f"budget_{bench.MAIN_BUDGET}": {"tokens_per_s": 85.0}}
    ratios, met = bench.summarize(zipf, cold_p50_ms=25.0)
    assert ratios == {"zipf_over_resident": pytest.approx(0.85)}
    assert met == {"zipf_over_resident": True, "cold_load_ms_p50": False}


def test_plot(tmp_path):
    row = {"tokens_per_s": 200.0, "device_hit_rate": 0.9, "evictions": 3}
    bench.save_plot(str(tmp_path / "cache.png"), {"8": row, "64": row, "1000": row}, row)
    assert (tmp_path / "cache.png").read_bytes()[:4] == b"\x89PNG"
