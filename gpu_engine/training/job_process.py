"""The parent's handle on a job running in its own process (`run_job`). asyncio; no torch.

The child is started in a new session, so a Ctrl-C meant for the parent does not reach it; the
parent decides whether to cancel or preempt it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import gpu_engine
from gpu_engine.training.errors import TrainErrorCode
from gpu_engine.training.events import JobEvent, JobEventKind, parse_job_event

log = logging.getLogger(__name__)

_PROJECT_ROOT = str(Path(gpu_engine.__file__).resolve().parents[1])
_MAX_LINE_BYTES = 1 << 20
_STDERR_TAIL_BYTES = 2000


class JobProcess:
    """`async for event in job.events()` until its terminal event; `cancel()` / `preempt()` any time.

    The child's stderr goes to `log_path` (appended) when given, else to this process's stderr.
    `num_threads` caps the child's torch/OpenMP threads (None: torch's default, one per core).
    """

    def __init__(
        self,
        spec_path: str | Path,
        *,
        log_path: str | Path | None = None,
        num_threads: int | None = None,
        python: str = sys.executable,
    ) -> None:
        if num_threads is not None and num_threads < 1:
            raise ValueError("num_threads must be >= 1")
        self.spec_path = str(spec_path)
        self.log_path = Path(log_path) if log_path is not None else None
        self.num_threads = num_threads
        self.python = python
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc is not None else None

    async def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PROJECT_ROOT, env.get("PYTHONPATH")) if p)
        if self.num_threads is not None:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(self.num_threads)
        stderr = None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            stderr = self.log_path.open("ab")
        try:
            self._proc = await asyncio.create_subprocess_exec(
                self.python,
                "-m",
                "gpu_engine.training.run_job",
                self.spec_path,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                env=env,
                start_new_session=True,
                limit=_MAX_LINE_BYTES,
            )
        finally:
            if stderr is not None:
                stderr.close()

    async def events(self) -> AsyncIterator[JobEvent]:
        """The child's events; if it exits without a terminal one, a FAILED (internal) ends them."""
        proc = self._require()
        async for raw in proc.stdout:
            try:
                event = parse_job_event(raw)
            except ValueError as exc:
                log.warning("job %s: ignoring a stdout line that is not an event: %s", proc.pid, exc)
                continue
            yield event
            if event.is_terminal:
                await self._finish()
                return
        code = await self._finish()
        yield JobEvent(
            JobEventKind.FAILED,
            code=TrainErrorCode.INTERNAL.value,
            reason=f"job process exited with status {code} without a result; {self._stderr_tail()}",
        )

    async def _finish(self) -> int:
        proc = self._require()
        code = await proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()  # releases the pipe transport now, not at garbage collection
        return code

    def cancel(self) -> None:
        """Ask the job to stop without a checkpoint (it answers with a CANCELLED event)."""
        self._send("cancel")

    def preempt(self) -> None:
        """Ask the job to checkpoint and stop (it answers with a PREEMPTED event)."""
        self._send("preempt")

    async def wait(self, timeout_s: float | None = None) -> int:
        """Exit status; after `timeout_s` the child is killed."""
        proc = self._require()
        try:
            return await asyncio.wait_for(proc.wait(), timeout_s)
        except TimeoutError:
            self.kill()
            return await proc.wait()

    def kill(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()

    def _send(self, word: str) -> None:
        proc = self._require()
        if proc.returncode is not None or proc.stdin is None or proc.stdin.is_closing():
            return
        try:
            proc.stdin.write(f"{word}\n".encode())
        except (BrokenPipeError, ConnectionResetError):
            log.debug("job %s already gone; %s not sent", proc.pid, word)

    def _require(self) -> asyncio.subprocess.Process:
        if self._proc is None:
            raise RuntimeError("the job process has not been started")
        return self._proc

    def _stderr_tail(self) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return "see the worker's stderr"
        with self.log_path.open("rb") as f:
            f.seek(max(0, self.log_path.stat().st_size - _STDERR_TAIL_BYTES))
            tail = f.read().decode("utf-8", "replace").strip().splitlines()
        return "stderr tail: " + " | ".join(tail[-5:])
