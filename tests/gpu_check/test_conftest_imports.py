"""The engine tests run where only the engine's packages are (the GPU device image, issue 19).

tests/gpu_check/device_image/sitecustomize.py makes the packages that image lacks (aiokafka,
msgspec, …) unimportable in a subprocess; there `tests/conftest.py` must import and the engine
tests, the device check's among them, must collect.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEVICE_IMAGE = Path(__file__).resolve().parent / "device_image"


def run_as_on_device(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(DEVICE_IMAGE)}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


def test_the_blocked_packages_are_absent_in_the_subprocess():
    code = ("import importlib.util\n"
            "print([m for m in ('aiokafka', 'msgspec', 'orjson', 'pytest_asyncio') if importlib.util.find_spec(m)])\n"
            "import aiokafka")
    result = run_as_on_device("-c", code)
    assert result.stdout.strip() == "[]"
    assert "ModuleNotFoundError: No module named 'aiokafka'" in result.stderr


def test_conftest_imports_without_the_kafka_side():
    result = run_as_on_device("-c", "import sys, tests.conftest; print(sorted(m for m in ('streamer', 'devbrokers') "
                                    "if m in sys.modules))")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"


def test_engine_tests_collect_without_the_kafka_side():
    result = run_as_on_device("-m", "pytest", "--collect-only", "-q", "-p", "no:asyncio", "-p", "no:cacheprovider",
                              "tests/engine")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    collected = result.stdout
    for test_id in ("test_engine_triton.py::test_engine_on_cuda_with_triton_matches_peft",
                    "test_engine_nf4_devices.py::test_nf4_base_matches_peft_on_the_same_nf4_base[cuda]",
                    "test_engine_triton.py::test_triton_matches_reference"):
        assert test_id in collected
