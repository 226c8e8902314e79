"""Every module of the service imports on its own, first, in a fresh interpreter.

A circular import only fails when the cycle is entered from one particular module; which module
a test session happens to import first decides whether anyone notices (it broke CI once:
gpu_engine.adapters -> training -> store -> adapters). So each module is imported alone.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("lorastream", "schemas", "streamer", "consumers", "gpu_engine", "cli", "land", "bench", "devbrokers")


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__main__":  # runs a program when imported
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names.append(".".join(parts))
    return names


def test_the_module_list_is_not_empty():
    assert len(_modules()) > 50


def test_each_module_imports_first_in_a_fresh_interpreter():
    # One interpreter per module would take minutes; instead a child imports each module in a
    # fresh sub-interpreter state by clearing the project's modules from sys.modules between them.
    script = r"""
import importlib, sys
failures = []
project = tuple(p + "." for p in sys.argv[1].split(",")) + tuple(sys.argv[1].split(","))
for name in sys.argv[2:]:
    for loaded in [m for m in sys.modules if m.startswith(project)]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - every failure is reported
        failures.append(f"{name}: {type(exc).__name__}: {exc}")
print("\n".join(failures))
sys.exit(1 if failures else 0)
"""
    modules = _modules()
    done = subprocess.run(
        [sys.executable, "-c", script, ",".join(PACKAGES), *modules],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
