"""CPU seconds used by processes (user + system, all threads), read from Linux /proc."""

from __future__ import annotations

import os
from pathlib import Path


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds each named process used since the meter was made (a None pid is left out)."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid is not None}
        self.start = {name: process_cpu_s(pid) for name, pid in self.pids.items()}

    def used_s(self) -> dict[str, float]:
        return {name: process_cpu_s(pid) - self.start[name] for name, pid in self.pids.items()}
