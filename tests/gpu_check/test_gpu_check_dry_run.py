"""`bench/gpu_check.sh --dry-run`: every step of the device check that needs no CUDA, on the CPU.

It runs with the packages the device image lacks blocked, selects the CUDA tests by name (so a
rename breaks this test, not the first device run) and requires them to be collected and skipped,
and runs bench.gpu at a tiny size with its JSON written per round.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu_env import read_outcomes

ROOT = Path(__file__).resolve().parents[2]
CUDA_TESTS = ("test_engine_nf4_devices::test_nf4_base_matches_peft_on_the_same_nf4_base[cuda]",
              "test_engine_triton::test_engine_on_cuda_with_triton_matches_peft",
              "test_cuda_graphs::test_graph_decode_on_cuda_matches_eager_and_peft",
              "test_lora_cuda::test_upload_is_one_staged_copy_on_the_load_stream_and_the_compute_stream_waits_for_it",
              "test_lora_cuda::test_static_shape_step_replays_in_a_cuda_graph_with_another_layout")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("gpu-check-out")
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env.update(OUT=str(out), PY=sys.executable)
    result = subprocess.run(["bash", "bench/gpu_check.sh", "--dry-run"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=280)
    return result, out


def test_dry_run_passes_every_step(dry_run):
    result, out = dry_run
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "DRY RUN on the CPU" in result.stdout and result.stdout.rstrip().endswith("GPU CHECK PASSED")
    summary = result.stdout[result.stdout.index("== summary"):]
    for name in ("environment", "triton-tests", "cuda-tests", "bench"):
        assert f"{name:<13} rc=0 " in summary
    assert (out / "check.log").read_text().rstrip().endswith("GPU CHECK PASSED")
    assert sorted(path.name for path in out.iterdir()) == [
        "check.log", "cuda-tests.xml", "environment.json", "gpu.json", "gpu.png", "triton-tests.xml"]


def test_versions_are_checked_with_cpu_expectations(dry_run):
    environment = json.loads((dry_run[1] / "environment.json").read_text())
    assert environment["unmet"] == [] and environment["cuda_available"] is False
    for name in ("torch", "triton", "transformers", "peft", "bitsandbytes", "re2"):
        assert environment[name] is not None, name
    assert environment["python"] == ".".join(map(str, sys.version_info[:3]))


def test_kernel_tests_ran_under_the_interpreter(dry_run):
    outcomes = read_outcomes(dry_run[1] / "triton-tests.xml")
    assert len(outcomes) >= 10 and set(outcomes.values()) == {"passed"}
    assert all(test_id.startswith("test_engine_triton::test_triton_") for test_id in outcomes)
    assert {test_id.split("[")[0] for test_id in outcomes} >= {  # every kernel property, not only the match
        "test_engine_triton::test_triton_matches_reference", "test_engine_triton::test_triton_wrong_slot_is_caught",
        "test_engine_triton::test_triton_static_shape_launches_every_bucket", "test_engine_triton::test_triton_split_k_shrink",
    }


def test_cuda_tests_were_selected_and_skipped(dry_run):
    outcomes = read_outcomes(dry_run[1] / "cuda-tests.xml")
    assert set(outcomes) == set(CUDA_TESTS)
    assert all(outcome.startswith("skipped") and "CUDA" in outcome for outcome in outcomes.values())


def test_bench_wrote_its_json_round_by_round(dry_run):
    result = json.loads((dry_run[1] / "gpu.json").read_text())
    assert result["progress"]["phase"] == "done" and result["progress"]["rounds_done"] == 2
    assert all(len(values) == 2 for values in result["tokens_per_s_samples"].values())
    assert set(result["tokens_per_s_median"]) == {"base", "land_1", "land_4", "land_8", "heavy_1", "heavy_4"}
    assert all(value > 0 for value in result["tokens_per_s_median"].values())
    environment = result["environment"]
    assert environment["triton"] and environment["transformers"] and environment["cuda_available"] is False
    assert any("attention" in op for op in environment["attention_kernels"]["decode"])
    assert "round 1/2" in dry_run[0].stdout and "round 2/2" in dry_run[0].stdout
    assert result["capacity"]["paged_over_slot"] >= 4 and result["capacity"]["kv_budget_gib"] > 0
    for workload in ("base", "land_32"):  # graphs are off on the CPU: eager only
        assert result["step_ms"][workload]["eager"] > 0 and result["step_ms"][workload]["graph"] is None
    assert (dry_run[1] / "gpu.png").read_bytes()[:4] == b"\x89PNG"
