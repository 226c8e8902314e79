"""bench/report.py: which benchmarks run, with what arguments, and a markdown built only from the
JSON each run wrote (a failed benchmark shows no figures)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bench import report
from bench.report import BenchRun, available, headline_rows, leaves, render

KAFKA_LIKE = {
    "config": {"streams": 64, "broker": "kafka"},
    "environment": {"cpus": 2},
    "paths": {
        "kafka": {"tokens_per_s_median": 812.5, "cpu_s": {"serving": 1.5}},
        "inprocess": {"tokens_per_s_median": 900.25, "cpu_s": {"serving": 1.25}},
    },
    "ratios": {"kafka_over_inprocess": 0.9027},
    "tokens_per_s": {"ours": 10.5, "peft": 5.25},
    "median_tokens_per_s": {"ours": 10.0, "peft": 5.0},
    "ttft_overhead_ms_p50": 3.25,
    "targets": {"kafka_over_inprocess": 0.85, "ttft_overhead_ms_p50": 15},
    "met": {"kafka_over_inprocess": True, "ttft_overhead_ms_p50": True},
    "raw": {"rounds": [1, 2, 3]},
    "samples": {"kafka": [1.0, 2.0]},
}


def test_leaves_flatten_dicts_and_drop_lists():
    assert leaves({"a": 1, "b": {"c": 2.5, "d": [1, 2]}, "e": "x"}) == {"a": 1, "b.c": 2.5, "e": "x"}


def test_headline_rows_join_ratios_targets_and_top_level_figures():
    assert headline_rows(KAFKA_LIKE) == [
        ["kafka_over_inprocess", 0.9027, 0.85, True],
        ["ttft_overhead_ms_p50", 3.25, 15, True],
    ]


def _run(tmp_path: Path, name: str, body: dict | None, code: int = 0) -> BenchRun:
    json_path, plot_path = tmp_path / f"{name}.json", tmp_path / f"{name}.png"
    if body is not None:
        json_path.write_text(json.dumps(body))
        plot_path.write_bytes(b"\x89PNG")
    return BenchRun(name, json_path, plot_path, 12.0, code)


def test_markdown_holds_this_runs_figures_and_marks_failures(tmp_path):
    doc_path = tmp_path / "benchmarks.md"
    runs = [_run(tmp_path, "kafka", KAFKA_LIKE), _run(tmp_path, "train", None, code=1)]
    text = render(runs, doc_path, quick=True)
    assert "| kafka_over_inprocess | 0.9027 | 0.85 | yes |" in text
    assert "| kafka | 812.5 | 1.5 |" in text and "| inprocess | 900.2 | 1.25 |" in text  # a matrix of paths
    assert "| ours | 10.5 | 10 |" in text  # flat dicts with the same keys share one table
    assert "![kafka](kafka.png)" in text and "Quick run" in text
    assert "| [train](#train) | **failed** | 12 |" in text and "This benchmark failed in this run" in text
    assert "| streams | 64 |" in text  # the configuration, folded
    assert "rounds" not in text.split("## kafka")[1].split("<details>")[0]  # raw samples are left out


def test_every_present_benchmark_runs_with_json_plot_and_quick(tmp_path, monkeypatch):
    calls = []

    def fake_call(command, cwd):
        calls.append(command)
        json_path = Path(command[command.index("--json") + 1])
        json_path.write_text(json.dumps({"ratios": {"x": 1.0}}))
        return 0

    monkeypatch.setattr(subprocess, "call", fake_call)
    (tmp_path / "engine.json").write_text('{"stale": true}')
    doc = tmp_path / "docs" / "benchmarks.md"
    code = report.main(["--out", str(tmp_path), "--doc", str(doc), "--quick"])
    assert code == 0
    names = available()
    assert [c[3] for c in calls] == [f"bench.{n}" for n in names]
    assert "engine" in names and "report" not in names
    assert all(c[-1] == "--quick" and "--plot" in c for c in calls)
    assert json.loads((tmp_path / "engine.json").read_text()) == {"ratios": {"x": 1.0}}  # rewritten
    assert doc.read_text().count("| x | 1 | — | — |") == len(names)


def test_a_failed_benchmark_makes_main_fail_and_leaves_no_stale_json(tmp_path, monkeypatch):
    monkeypatch.setattr(subprocess, "call", lambda command, cwd: 3)
    (tmp_path / "engine.json").write_text('{"ratios": {"old": 9.0}}')
    doc = tmp_path / "benchmarks.md"
    assert report.main(["--out", str(tmp_path), "--doc", str(doc), "--only", "engine"]) == 1
    assert not (tmp_path / "engine.json").exists()
    assert "old" not in doc.read_text() and "failed" in doc.read_text()


@pytest.mark.parametrize("value", [1.0, 0.5, 12345.678])
def test_numbers_format_compactly(value):
    assert report.fmt(value) == f"{value:,.4g}"
