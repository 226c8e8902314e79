"""The device check's requirements and its rule for test runs, table-driven."""

from __future__ import annotations

import shutil

import pytest

from bench.gpu_env import compiles_with_python_h, judge_outcomes, read_outcomes, unmet

GOOD = {"torch": "2.11.0+cu130", "triton": "3.6.0", "transformers": "5.17.0", "peft": "0.18.0",
        "bitsandbytes": "0.50.2", "re2": "unknown", "cc": "/usr/bin/gcc", "python_h": "/usr/include/Python.h",
        "cc_python_h_error": None, "nf4_error": None, "cuda_available": True}


@pytest.mark.parametrize(
    ("change", "cuda", "expected"),
    [
        ({}, True, []),
        ({"cuda_available": False, "cc": None, "nf4_error": "no CUDA library"}, False, []),  # CPU: reported only
        ({"transformers": "4.57.1"}, False, ["transformers 4.57.1 < 5.0"]),
        ({"torch": "2.8.0+cu128"}, True, ["torch 2.8.0+cu128 < 2.9"]),
        ({"bitsandbytes": None}, False, ["bitsandbytes does not import"]),
        ({"cuda_available": False}, True, ["torch sees no CUDA GPU"]),
        ({"cc": None}, True, ["no C compiler"]),
        ({"cc_python_h_error": "Python.h: No such file"}, True, ["cannot build against"]),
        ({"nf4_error": "RuntimeError: no kernel"}, True, ["bitsandbytes NF4 on CUDA"]),
    ],
)
def test_requirements(change, cuda, expected):
    problems = unmet({**GOOD, **change}, cuda)
    assert len(problems) == len(expected), problems
    for problem, fragment in zip(problems, expected):
        assert fragment in problem


@pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None, reason="no C compiler here")
def test_python_h_probe_builds_with_the_compiler_and_fails_without_one():
    assert compiles_with_python_h(shutil.which("gcc") or shutil.which("cc")) is None
    assert compiles_with_python_h(shutil.which("false")) is not None


NF4 = "test_engine_nf4_devices::test_nf4[cuda]"
ENGINE = "test_engine_triton::test_engine_on_cuda"
KERNEL = "test_engine_triton::test_kernel[bf16]"


@pytest.mark.parametrize(
    ("outcomes", "cuda", "expect_skipped", "expected"),
    [
        ({NF4: "passed", ENGINE: "passed"}, True, [], []),
        ({NF4: "skipped: needs a CUDA GPU", ENGINE: "passed"}, True, [], ["skipped"]),  # a skip on the device fails
        ({KERNEL: "failed"}, True, [], ["failed"]),
        ({}, True, [], ["no test ran"]),
        ({NF4: "skipped: needs a CUDA GPU", ENGINE: "skipped: needs a CUDA GPU"}, False, [NF4, ENGINE], []),
        ({NF4: "skipped: needs a CUDA GPU"}, False, [NF4, ENGINE], ["was not collected"]),
        ({NF4: "passed", ENGINE: "skipped: x"}, False, [NF4, ENGINE], ["should have been skipped"]),
        ({KERNEL: "skipped: needs triton"}, False, [], ["skipped"]),  # only the named CUDA tests may skip
    ],
)
def test_rules_for_a_test_run(outcomes, cuda, expect_skipped, expected):
    problems = judge_outcomes(outcomes, cuda, expect_skipped)
    assert len(problems) == len(expected), problems
    for problem, fragment in zip(problems, expected):
        assert fragment in problem


def test_junit_report_is_read_per_test(tmp_path):
    report = tmp_path / "r.xml"
    report.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.engine.test_engine_triton" name="test_a[x]"/>'
        '<testcase classname="tests.engine.test_engine_triton" name="test_b">'
        '<skipped type="pytest.skip" message="needs a CUDA GPU"/></testcase>'
        '<testcase classname="tests.engine.test_engine_nf4_devices" name="test_c[cuda]"><failure message="m"/></testcase>'
        "</testsuite></testsuites>"
    )
    assert read_outcomes(report) == {
        "test_engine_triton::test_a[x]": "passed",
        "test_engine_triton::test_b": "skipped: needs a CUDA GPU",
        "test_engine_nf4_devices::test_c[cuda]": "failed",
    }
