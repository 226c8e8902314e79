"""Reliability tests run real `lorastream serve` processes against the session's Apache Kafka."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import tiny_model  # noqa: F401  (re-exported fixture)

ROOT = Path(__file__).resolve().parents[2]


class ServeProcess:
    """`python -m consumers.cli serve …` in its own process group; killed at teardown."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "consumers.cli", "--log-level", "WARNING", "serve", *args],
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self, timeout_s: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def close(self) -> None:
        self.kill()
        self._log.close()


@pytest.fixture
def serve_process(kafka_bootstrap, topic_prefix, tiny_model, tmp_path):
    """Factory: start(instance_id, *extra_args) → ServeProcess on the test's topics."""
    model_dir, adapter_root = tiny_model
    started: list[ServeProcess] = []

    def start(instance_id: str, *extra: str) -> ServeProcess:
        args = [
            "--model", str(model_dir), "--adapters", str(adapter_root), "--device", "cpu",
            "--bootstrap-servers", kafka_bootstrap, "--topic-prefix", topic_prefix,
            "--instance-id", instance_id, "--request-partitions", "4", *extra,
        ]
        process = ServeProcess(args, tmp_path / f"serve-{instance_id}-{len(started)}.log")
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


_COUNTS: list[str] = []


@pytest.fixture
def report_counts():
    """Record a line of counts; every line is printed in the session summary (CI logs show it)."""
    return _COUNTS.append


def pytest_terminal_summary(terminalreporter) -> None:
    if _COUNTS:
        terminalreporter.section("reliability counts")
        for line in _COUNTS:
            terminalreporter.write_line(line)
