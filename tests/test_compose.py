"""The production compose stack validates (Debian's docker-compose checks it without an engine)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose command not installed")
def test_compose_file_validates():
    result = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "compose" / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_grafana_dashboard_has_per_adapter_panels():
    dashboard = json.loads((ROOT / "compose" / "grafana" / "dashboards" / "lorastream.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert sum("by (adapter" in e for e in exprs) >= 4
    assert dashboard["templating"]["list"][0]["name"] == "adapter"
