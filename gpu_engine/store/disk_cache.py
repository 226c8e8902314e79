"""DiskCache: the disk tier — local copies of remote adapters under a byte budget, LRU. No torch.

Layout: `<dir>/<name>-<hash>/<version>/` holding the two adapter files and `entry.json` (the
location, version and checksum of the copy), so a restarted process adopts what is there.
Downloads go to `<dir>/.tmp-*` and are renamed into place once complete and verified. An entry
is pinned while checked out and never evicted then; one download per (location, version) runs
at a time, other callers for it wait and share its result (single-flight).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from gpu_engine.cache_stats import CacheStats
from gpu_engine.errors import AdapterChecksumError, AdapterUnavailableError, EngineError
from gpu_engine.adapter_files import adapter_checksum

ENTRY_FILE = "entry.json"
TIER = "disk"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

Key = tuple[str, int]  # (location uri, version)


@dataclass
class _Entry:
    path: Path
    num_bytes: int
    checksum: str
    pins: int = 0


@dataclass
class _Flight:
    error: BaseException | None = None


def entry_dir_name(location: str) -> str:
    """A readable, collision-free directory name: the last path component plus a hash of the whole."""
    tail = _UNSAFE.sub("_", location.rstrip("/").rsplit("/", 1)[-1])[:48] or "adapter"
    return f"{tail}-{hashlib.sha256(location.encode()).hexdigest()[:16]}"


def _shared(error: BaseException) -> EngineError:
    """What a caller that waited on a failed download raises: its own copy of the leader's error."""
    if isinstance(error, EngineError):
        return type(error)(str(error))
    return AdapterUnavailableError(f"the download this request waited for failed: {error!r}")


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


class DiskCache:
    """`checkout(location, version, checksum, fetch)` yields the directory of a complete local copy.

    `fetch(dest)` must write the adapter's files into the empty directory `dest`. Thread-safe.
    `directory=None` uses a fresh temporary directory, removed when the cache is collected.
    """

    def __init__(self, directory: str | Path | None, max_bytes: int | None, stats: CacheStats) -> None:
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be >= 1 or None")
        self.max_bytes = max_bytes
        self._stats = stats
        self._directory = None if directory is None else Path(directory)
        self._lock = threading.Lock()
        self._flight_done = threading.Condition(self._lock)
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()  # least recently used first
        self._flights: dict[Key, _Flight] = {}
        if self._directory is not None:
            self._adopt()

    @property
    def directory(self) -> Path:
        with self._lock:
            return self._root()

    def _root(self) -> Path:
        if self._directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix="lorastream-disk-"))
            weakref.finalize(self, shutil.rmtree, self._directory, True)
        return self._directory

    @property
    def num_bytes(self) -> int:
        with self._lock:
            return sum(e.num_bytes for e in self._entries.values())

    def keys(self) -> list[Key]:
        """Resident entries, least recently used first."""
        with self._lock:
            return list(self._entries)

    @contextlib.contextmanager
    def checkout(self, location: str, version: int, checksum: str, fetch: Callable[[Path], None]) -> Iterator[Path]:
        key = (location, version)
        entry = self._pin_or_lead(key, checksum)
        if entry is None:
            entry = self._download(key, checksum, fetch)
        try:
            yield entry.path
        finally:
            with self._lock:
                entry.pins -= 1
                trash = self._evict_over_budget()
            self._remove(trash)

    def _pin_or_lead(self, key: Key, checksum: str) -> _Entry | None:
        """Pin a resident entry (a hit), or register this caller as the one to download it (None)."""
        trash = []
        with self._lock:
            while True:
                entry = self._entries.get(key)
                if entry is not None and checksum and entry.checksum != checksum:
                    if entry.pins:
                        raise AdapterChecksumError(
                            f"{key[0]} version {key[1]}: the cached copy in use does not match checksum {checksum[:12]}…"
                        )
                    trash.append(self._drop(key))  # stale copy: fetch again
                    entry = None
                if entry is not None:
                    entry.pins += 1
                    self._entries.move_to_end(key)
                    self._stats.hit(TIER)
                    break
                flight = self._flights.get(key)
                if flight is None:
                    self._flights[key] = _Flight()
                    self._stats.miss(TIER)
                    break
                self._flight_done.wait_for(lambda: key not in self._flights)
                if flight.error is not None:
                    raise _shared(flight.error) from flight.error
            self._report()
        self._remove(trash)
        return entry

    def _download(self, key: Key, checksum: str, fetch: Callable[[Path], None]) -> _Entry:
        started = time.monotonic()
        with self._lock:
            root = self._root()
        tmp = root / f".tmp-{uuid.uuid4().hex}"
        try:
            tmp.mkdir(parents=True)
            fetch(tmp)
            actual = adapter_checksum(tmp)
            if checksum and actual != checksum:
                raise AdapterChecksumError(
                    f"{key[0]} version {key[1]}: downloaded files hash to {actual[:12]}…, expected {checksum[:12]}…"
                )
            (tmp / ENTRY_FILE).write_text(json.dumps({"location": key[0], "version": key[1], "checksum": actual}))
            final = root / entry_dir_name(key[0]) / str(key[1])
            if final.exists():  # left by an earlier process without a valid entry.json
                shutil.rmtree(final)
            final.parent.mkdir(exist_ok=True)
            os.rename(tmp, final)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            with self._lock:
                self._flights.pop(key).error = exc
                self._flight_done.notify_all()
            if isinstance(exc, OSError):
                raise AdapterUnavailableError(f"{key[0]} version {key[1]}: local copy failed: {exc}") from exc
            raise
        entry = _Entry(final, _dir_bytes(final), actual, pins=1)
        with self._lock:
            self._entries[key] = entry
            del self._flights[key]
            self._flight_done.notify_all()
            self._stats.loaded(TIER, time.monotonic() - started)
            trash = self._evict_over_budget()
        self._remove(trash)
        return entry

    def _evict_over_budget(self) -> list[Path]:
        """Drop least recently used unpinned entries until within budget. Caller holds the lock."""
        trash = []
        if self.max_bytes is not None:
            total = sum(e.num_bytes for e in self._entries.values())
            for key in [k for k, e in self._entries.items() if e.pins == 0]:
                if total <= self.max_bytes:
                    break
                total -= self._entries[key].num_bytes
                self._stats.evict(TIER, self._entries[key].num_bytes)
                trash.append(self._drop(key))
        self._report()
        return trash

    def _drop(self, key: Key) -> Path:
        """Forget an entry and move its directory aside (a rename: a new copy may take its place at once)."""
        entry = self._entries.pop(key)
        trash = self._root() / f".trash-{uuid.uuid4().hex}"
        os.rename(entry.path, trash)
        return trash

    @staticmethod
    def _remove(paths: list[Path]) -> None:
        for path in paths:
            shutil.rmtree(path, ignore_errors=True)

    def _report(self) -> None:
        self._stats.resident(TIER, sum(e.num_bytes for e in self._entries.values()), len(self._entries))

    def _adopt(self) -> None:
        """Index the complete copies a previous process left, oldest first; clear its leftovers."""
        root = self._directory
        root.mkdir(parents=True, exist_ok=True)
        found = []
        for path in root.iterdir():
            if path.name.startswith((".tmp-", ".trash-")):
                shutil.rmtree(path, ignore_errors=True)
        for entry_file in root.glob(f"*/*/{ENTRY_FILE}"):
            try:
                body = json.loads(entry_file.read_text())
                key = (str(body["location"]), int(body["version"]))
                if entry_file.parent != root / entry_dir_name(key[0]) / str(key[1]):
                    continue
                found.append((entry_file.stat().st_mtime, key, _Entry(entry_file.parent, 0, str(body["checksum"]))))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        for _, key, entry in sorted(found, key=lambda item: item[0]):
            entry.num_bytes = _dir_bytes(entry.path)
            self._entries[key] = entry
        with self._lock:
            self._remove(self._evict_over_budget())
