"""A broker child process on loopback: start, wait until it serves metadata, stop, restart."""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self

from aiokafka.admin import AIOKafkaAdminClient

from streamer.errors import BrokerError

log = logging.getLogger(__name__)

_PROBE_TIMEOUT_MS = 3000
_LOG_TAIL_BYTES = 4000
_live: set[BrokerProcess] = set()


class BrokerProcess:
    """A broker child process on 127.0.0.1; subclasses say how to prepare and launch it."""

    kind = "broker"

    def __init__(self, *, port: int | None = None, startup_timeout_s: float = 60.0) -> None:
        if startup_timeout_s <= 0:
            raise ValueError("startup_timeout_s must be > 0")
        self.port = port or free_port()
        self.startup_timeout_s = startup_timeout_s
        self.workdir = Path(tempfile.mkdtemp(prefix=f"lorastream-{self.kind}-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._prepared = False
        _live.add(self)  # closed at interpreter exit at the latest

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "broker.log"

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The process id while it runs (benchmarks read its CPU time from /proc)."""
        return self._proc.pid if self.is_running else None

    def client_kwargs(self) -> dict[str, Any]:
        """aiokafka keyword arguments (besides bootstrap_servers) an administrator connects with."""
        return {}

    def _prepare(self) -> None:
        """One-time set-up before the first start (config files, storage format)."""

    def _command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> Self:
        """Launch the process (if not running) and block until it answers metadata requests."""
        if self.is_running:
            return self
        if not self._prepared:
            self._prepare()
            self._prepared = True
        with open(self.log_path, "ab") as log_file:  # the child keeps its own descriptor
            self._proc = subprocess.Popen(
                self._command(),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                start_new_session=True,  # a terminal's Ctrl-C reaches us; we stop it in order
            )
        started_s = time.monotonic()
        try:
            self._wait_ready()
        except BaseException:
            self.stop(timeout_s=0)
            raise
        log.info(
            "%s ready at %s in %.1f s",
            self.kind,
            self.bootstrap_servers,
            time.monotonic() - started_s,
        )
        return self

    def stop(self, *, timeout_s: float = 15.0) -> None:
        """End the process: SIGTERM, then SIGKILL after timeout_s (0: kill at once, a crash)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            if timeout_s > 0:
                proc.terminate()
                try:
                    proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    log.warning("%s did not stop within %.1f s; killing it", self.kind, timeout_s)
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def restart(self, *, timeout_s: float = 15.0) -> Self:
        self.stop(timeout_s=timeout_s)
        return self.start()

    def close(self) -> None:
        """Stop the process and delete its working directory (data and logs)."""
        self.stop(timeout_s=5.0)
        _live.discard(self)
        shutil.rmtree(self.workdir, ignore_errors=True)

    async def astart(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def astop(self, *, timeout_s: float = 15.0) -> None:
        await asyncio.to_thread(self.stop, timeout_s=timeout_s)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return await self.astart()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        with ThreadPoolExecutor(1, thread_name_prefix="lorastream-broker-probe") as pool:
            while True:
                if self._proc is None or self._proc.poll() is not None:
                    raise BrokerError(f"{self.kind} exited during start-up\n{self.log_tail()}")
                # a fresh event loop in a worker thread: safe whether or not the caller runs one
                if (
                    _port_open(self.port)
                    and pool.submit(asyncio.run, probe_metadata(self.bootstrap_servers, **self.client_kwargs())).result()
                ):
                    return
                if time.monotonic() > deadline:
                    raise BrokerError(
                        f"{self.kind} not ready after {self.startup_timeout_s:g} s\n"
                        f"{self.log_tail()}"
                    )
                time.sleep(0.1)

    def log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return "(no broker log)"


async def probe_metadata(bootstrap_servers: str, **client_kwargs: Any) -> bool:
    """True when a metadata request succeeds and names at least one broker and a controller.

    `client_kwargs` are more aiokafka settings, such as the credentials a secured broker needs.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        request_timeout_ms=_PROBE_TIMEOUT_MS,
        client_id="lorastream-probe",
        **client_kwargs,
    )
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
    except Exception:  # any failure just means "not ready yet"
        return False
    finally:
        await admin.close()
    return bool(cluster.get("brokers")) and cluster.get("controller_id", -1) >= 0


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@atexit.register
def _close_all() -> None:
    for broker in list(_live):
        broker.close()
