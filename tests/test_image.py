"""The service image copies every package the wheel installs, and nothing development-only."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _wheel_packages() -> set[str]:
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    excluded = {pattern.rstrip("*").rstrip(".") for pattern in find.get("exclude", [])}
    return {pattern.rstrip("*").rstrip(".") for pattern in find["include"]} - excluded


def _copied_into_image() -> set[str]:
    text = (ROOT / "compose" / "Dockerfile").read_text()
    return {match for match in re.findall(r"^COPY (\S+) \1\s*$", text, flags=re.MULTILINE)}


def test_the_image_copies_exactly_the_wheels_packages():
    packages = _wheel_packages()
    assert {"schemas", "streamer", "consumers", "gpu_engine", "cli", "land"} <= packages
    assert _copied_into_image() == packages
