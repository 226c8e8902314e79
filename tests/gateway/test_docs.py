"""docs/gateway.md's mapping tables name every field and every error code the code maps."""

from __future__ import annotations

from pathlib import Path

from gateway.errors import WIRE_ERROR_STATUS
from gateway.requests import CHAT_FIELDS, COMPLETION_FIELDS, DEFAULT_ONLY

DOC = (Path(__file__).resolve().parents[2] / "docs" / "gateway.md").read_text()


def test_every_field_is_documented():
    for name in {*COMPLETION_FIELDS, *CHAT_FIELDS, *DEFAULT_ONLY}:
        assert f"`{name}`" in DOC, name


def test_every_wire_error_code_is_documented_with_its_status():
    rows = [line for line in DOC.splitlines() if line.startswith("| 4") or line.startswith("| 5")]
    for code, status in WIRE_ERROR_STATUS.items():
        assert any(row.startswith(f"| {status}") and f"`{code}`" in row for row in rows), code
