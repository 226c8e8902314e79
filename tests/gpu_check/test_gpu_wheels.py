"""The carried wheel set: file-name tags against a Python and machine, and the script's loud stop."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu_wheels import CARRIED, WheelName, wheel_problems

ROOT = Path(__file__).resolve().parents[2]
BNB = "bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl"
RE2 = "google_re2-1.1.20251105-1-cp312-cp312-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl"


@pytest.mark.parametrize(
    ("filename", "python", "machine", "problems"),
    [
        (BNB, (3, 12), "x86_64", 0),
        (BNB, (3, 11), "x86_64", 0),  # py3-none fits any Python 3
        (BNB, (3, 12), "aarch64", 1),
        (RE2, (3, 12), "x86_64", 0),
        (RE2, (3, 11), "x86_64", 2),  # Python tag and ABI tag
        (RE2, (3, 13), "aarch64", 3),
        ("pkg-1.0-cp312-abi3-manylinux_2_17_x86_64.whl", (3, 12), "x86_64", 0),
        ("pkg-1.0-py3-none-any.whl", (3, 12), "aarch64", 0),
    ],
)
def test_tags_against_python_and_machine(filename, python, machine, problems):
    assert len(WheelName.parse(filename).problems(python, machine)) == problems


def test_parse_reads_name_version_and_tags():
    wheel = WheelName.parse(RE2)
    assert (wheel.project, wheel.version) == ("google_re2", "1.1.20251105")
    assert wheel.python_tags == ("cp312",) and wheel.platform_tags[-1] == "manylinux_2_28_x86_64"
    with pytest.raises(ValueError):
        WheelName.parse("bitsandbytes-0.50.2.tar.gz")


def make_dir(tmp_path: Path, names: list[str]) -> Path:
    wheel_dir = tmp_path / ".whl"
    wheel_dir.mkdir()
    for name in names:
        (wheel_dir / name).write_bytes(b"")
    return wheel_dir


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        ([BNB, RE2], []),
        ([BNB], ["google-re2==1.1.20251105: no wheel"]),
        ([BNB, RE2, "bitsandbytes-0.49.0-py3-none-manylinux_2_24_x86_64.whl"],
         ["bitsandbytes: 2 wheels", "version 0.49.0, the check pins 0.50.2"]),
        ([BNB, RE2, "orjson-3.10.0-cp312-cp312-manylinux_2_17_x86_64.whl"], ["not a carried wheel"]),
    ],
)
def test_wheel_dir_holds_exactly_the_pinned_wheels(tmp_path, names, expected):
    problems = wheel_problems(make_dir(tmp_path, names), (3, 12), "x86_64")
    assert len(problems) == len(expected), problems
    for problem, fragment in zip(problems, expected):
        assert fragment in problem


def test_a_missing_wheel_dir_says_how_to_make_it(tmp_path):
    (problem,) = wheel_problems(tmp_path / ".whl", (3, 12), "x86_64")
    assert "make gpu-wheels" in problem and "carry" in problem


def test_pins_name_the_packages_the_engine_imports():
    assert {wheel.module for wheel in CARRIED} == {"bitsandbytes", "re2"}


def run_script(cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PY": sys.executable, "OUT": str(cwd / "out")}
    return subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_device_run_stops_loudly_without_wheels(tmp_path):
    result = run_script(tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "WHEELS UNUSABLE" in result.stdout and "make gpu-wheels" in result.stdout
    assert "GPU CHECK STOPPED" in result.stdout
    assert "== environment" not in result.stdout  # nothing ran after the failed step


def test_device_run_stops_loudly_on_wheels_for_another_python(tmp_path):
    other = f"cp3{sys.version_info.minor + 1}"
    make_dir(tmp_path, [BNB, f"google_re2-1.1.20251105-1-{other}-{other}-manylinux_2_28_x86_64.whl"])
    result = run_script(tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"Python tag {other} does not fit Python 3.{sys.version_info.minor}" in result.stdout
    assert "== install" not in result.stdout
