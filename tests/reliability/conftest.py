"""Reliability tests run real `lorastream serve` processes against the session's Apache Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from schemas import DeadLetter, decode
from streamer import KafkaConfig, make_consumer
from tests.integration.conftest import tiny_model  # noqa: F401  (re-exported fixture)

ROOT = Path(__file__).resolve().parents[2]


class ServeProcess:
    """`python -m cli.main serve …` in its own process group; killed at teardown."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "--log-level", "WARNING", "serve", *args],
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


@contextlib.contextmanager
def train_worker_process(args: list[str], log_path: Path):
    """`python -m cli.main train-worker …` in its own process group; killed at the end."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "--log-level", "WARNING", "train-worker", *args],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


async def dead_letters(kafka: KafkaConfig, topic: str, count: int) -> list[DeadLetter]:
    consumer = make_consumer(kafka, topic)
    await consumer.start()
    letters: list[DeadLetter] = []
    try:
        async with asyncio.timeout(30):
            while len(letters) < count:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    letters.extend(decode(r.value, DeadLetter) for r in records)
    finally:
        await consumer.stop()
    return letters


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
