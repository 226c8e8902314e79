"""An adapter's release history: which of its installed versions were announced, in order, and how
many announcements (revisions) there were; and each version's evaluation record. No torch.

The history lives beside the versions, in `<root>/<adapter_id>/.lorastream/releases.json`, and is
replaced in one rename under a lock (the training worker and `lorastream promote` / `rollback` may
write it at once). `released` is a stack: a release pushes a version (the one served is the top), a
rollback pops the top so that the one below is served again. Every change counts one revision: the
adapters topic's consumers order announcements by revision, so a rollback to a lower version number
is a new, higher revision and not a lower version (which they refuse).

A version's evaluation (`lorastream_release.json` in its own directory: scores and decision, as a
JSON object the worker translates) is written once, when the version is installed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

RELEASES_FILE = "releases.json"
EVALUATION_FILE = "lorastream_release.json"
MAX_HISTORY = 16  # released versions remembered (rollbacks possible in a row: MAX_HISTORY - 1)
_LOCK_FILE = ".releases.lock"


@dataclass(frozen=True)
class ReleaseHistory:
    revision: int = 0
    released: tuple[int, ...] = ()  # announced versions, oldest first; the last is the one served

    @property
    def current(self) -> int | None:
        return self.released[-1] if self.released else None

    def pushed(self, version: int) -> ReleaseHistory:
        return ReleaseHistory(self.revision + 1, (*self.released, version)[-MAX_HISTORY:])

    def popped(self) -> ReleaseHistory:
        """The history after a rollback; raises ValueError when no earlier release is recorded."""
        if len(self.released) < 2:
            raise ValueError("no earlier release is recorded to roll back to")
        return ReleaseHistory(self.revision + 1, self.released[:-1])


def read_history(versions_dir: Path) -> ReleaseHistory:
    """The recorded history (empty when none, or when the file is unreadable)."""
    try:
        body = json.loads((versions_dir / RELEASES_FILE).read_text())
        released = tuple(int(v) for v in body["released"])
        return ReleaseHistory(int(body["revision"]), released[-MAX_HISTORY:])
    except (OSError, ValueError, KeyError, TypeError):
        return ReleaseHistory()


def write_history(versions_dir: Path, history: ReleaseHistory) -> None:
    body = {"revision": history.revision, "released": list(history.released)}
    _write_atomic(versions_dir / RELEASES_FILE, json.dumps(body))


@contextlib.contextmanager
def locked(versions_dir: Path) -> Iterator[None]:
    """Hold the id's release lock (an advisory file lock; processes on one host or a shared volume)."""
    versions_dir.mkdir(parents=True, exist_ok=True)
    with open(versions_dir / _LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_evaluation(version_dir: Path, evaluation: dict) -> None:
    _write_atomic(version_dir / EVALUATION_FILE, json.dumps(evaluation))


def read_evaluation(version_dir: Path) -> dict | None:
    """The version's evaluation record; None when it has none (released without one, or by hand)."""
    try:
        body = json.loads((version_dir / EVALUATION_FILE).read_text())
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}")
    tmp.write_text(text)
    os.replace(tmp, path)
