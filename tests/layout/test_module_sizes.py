"""No module outside tests grows past 400 lines: one concept per module (STYLE.md)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("lorastream", "schemas", "streamer", "consumers", "gpu_engine", "cli", "land", "bench", "devbrokers")
MAX_LINES = 400


def test_no_module_is_over_400_lines():
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
    }
    assert len(sizes) > 100
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}
