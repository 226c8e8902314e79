"""CPU seconds used by processes (user + system, all threads) or by one thread, read from Linux /proc."""

from __future__ import annotations

import os
from pathlib import Path

# what a meter measures: a process id, or (process id, native thread id) for one of its threads
Target = int | tuple[int, int]


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (Linux /proc)."""
    return _stat_cpu_s(Path(f"/proc/{pid}/stat"))


def thread_cpu_s(pid: int, tid: int) -> float:
    """User + system CPU seconds of one thread (`threading.get_native_id()`) of a process."""
    return _stat_cpu_s(Path(f"/proc/{pid}/task/{tid}/stat"))


def _stat_cpu_s(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def threads_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds of every live thread of a process, keyed `name/tid` (name from /proc comm)."""
    used = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            used[f"{name}/{task.name}"] = _stat_cpu_s(task / "stat")
        except FileNotFoundError:  # the thread ended meanwhile
            continue
    return used


def cpu_s(target: Target) -> float:
    return thread_cpu_s(*target) if isinstance(target, tuple) else process_cpu_s(target)


class CpuMeter:
    """CPU seconds each named process or thread used since the meter was made (None is left out)."""

    def __init__(self, targets: dict[str, Target | None]) -> None:
        self.targets = {name: target for name, target in targets.items() if target is not None}
        self.start = {name: cpu_s(target) for name, target in self.targets.items()}

    def used_s(self) -> dict[str, float]:
        return {name: cpu_s(target) - self.start[name] for name, target in self.targets.items()}
