"""The runtime wheel holds the runtime packages only; the benchmarks run from a source checkout.

The package list is setuptools' own, read from pyproject.toml the way `pip wheel .` reads it
(building a wheel takes an isolated build environment; the list is what decides its contents).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from setuptools.config.pyprojecttoml import apply_configuration
from setuptools.dist import Distribution

from cli.main import main

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = {"lorastream", "schemas", "streamer", "consumers", "gpu_engine", "cli", "land", "gateway"}
DEVELOPMENT = {"bench", "devbrokers", "tests"}


def wheel_packages() -> set[str]:
    dist = apply_configuration(Distribution(), ROOT / "pyproject.toml")
    assert not dist.py_modules, "top-level modules would ship beside the packages"
    return set(dist.packages)


def test_the_wheel_holds_the_runtime_packages_and_no_development_code():
    packages = wheel_packages()
    top_level = {name.split(".")[0] for name in packages}
    assert RUNTIME <= top_level
    assert top_level.isdisjoint(DEVELOPMENT)
    assert top_level == RUNTIME, f"unexpected packages: {sorted(top_level - RUNTIME)}"


def test_every_runtime_subpackage_ships():
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for package in RUNTIME
        for init in (ROOT / package).rglob("__init__.py")
    }
    assert on_disk - wheel_packages() == set()


def test_the_embedded_broker_ships_and_the_jar_launchers_do_not():
    packages = wheel_packages()
    assert "streamer.brokers" in packages
    brokers = {p.name for p in (ROOT / "streamer" / "brokers").glob("*.py")}
    assert {"tansu.py", "process.py"} <= brokers
    assert not brokers & {"kafka_jars.py", "secured.py"}


def test_without_bench_the_cli_says_where_benchmarks_run(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "bench", None)  # as in an installed wheel: no bench package
    assert main(["bench", "kafka", "--", "--quick"]) == 2
    err = capsys.readouterr().err
    assert "development-only" in err and "python -m cli bench kafka" in err and "make bench" in err


def test_from_a_checkout_the_cli_runs_a_benchmark(capsys):
    with pytest.raises(SystemExit) as info:
        main(["bench", "kafka", "--", "--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("usage: lorastream bench kafka")


def test_the_installed_lorastream_command_runs_benchmarks_of_its_checkout(tmp_path):
    """The venv's `lorastream` (an editable install, which does not expose bench/) finds the
    benchmarks beside its cli/ package, from any working directory."""
    import subprocess

    script = Path(sys.executable).with_name("lorastream")
    if not script.is_file():
        pytest.fail(f"no lorastream script beside {sys.executable}: install the checkout (make venv)")
    done = subprocess.run(
        [str(script), "bench", "kafka", "--", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage: lorastream bench kafka")
