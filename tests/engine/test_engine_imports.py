"""The engine stands alone: it never imports Kafka, the event schemas, the streamer or consumers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

FORBIDDEN = ("aiokafka", "schemas", "streamer", "consumers", "triton")


def test_engine_modules_import_nothing_from_the_kafka_side():
    code = (
        "import sys, gpu_engine.engine, gpu_engine.engine_thread, gpu_engine.tiny\n"
        f"print(sorted(m for m in {FORBIDDEN!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
