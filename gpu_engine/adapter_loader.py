"""AdapterLoader: fetch and parse adapters into the host tier on worker threads, one load per version.

`request(ref)` never blocks: it starts a load on the pool (`load_workers` threads: store
checkout, then `read_adapter`) unless the version is already in the
host tier or on its way — concurrent requests for one cold adapter share a single load
(single-flight). At most `max_pending` loads are queued or running: beyond that a request is
refused at once with AdapterUnavailableError (transient, not remembered), so a flood of unknown
ids cannot queue store lookups without bound. A failed load is remembered for `failure_ttl_s`
(at most MAX_REMEMBERED_FAILURES of them, oldest forgotten first), so a burst of requests for a
broken adapter costs one attempt; later requests try again (a store outage is transient).
`on_done(key, error)` is called on the worker thread when a load ends, after the host tier has
the adapter (error None) or the failure is remembered.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from gpu_engine.adapter_ref import AdapterRef
from gpu_engine.adapters import LoraAdapter
from gpu_engine.cache_stats import CacheStats
from gpu_engine.errors import AdapterUnavailableError, EngineError
from gpu_engine.host_cache import TIER, HostCache
from gpu_engine.seq_state import AdapterKey
from gpu_engine.store import AdapterStore

logger = logging.getLogger(__name__)

ReadFn = Callable[[Path, AdapterRef], LoraAdapter]  # a checked-out directory -> a parsed adapter
DoneFn = Callable[[AdapterKey, EngineError | None], None]
MAX_REMEMBERED_FAILURES = 4096


class AdapterLoader:
    def __init__(
        self,
        store: AdapterStore,
        read: ReadFn,
        host: HostCache,
        stats: CacheStats,
        num_workers: int,
        on_done: DoneFn,
        *,
        max_pending: int,
        is_current: Callable[[AdapterKey], bool] = lambda key: True,
        failure_ttl_s: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._read = read
        self._host = host
        self._stats = stats
        self._on_done = on_done
        self._is_current = is_current
        self.max_pending = max_pending
        self.failure_ttl_s = failure_ttl_s
        self._clock = clock
        self._pool = ThreadPoolExecutor(num_workers, thread_name_prefix="lorastream-adapter-load")
        self._lock = threading.Lock()
        self._flights: dict[AdapterKey, Future] = {}
        # key -> (error, remembered until); the ttl is fixed, so the oldest entry expires first
        self._failures: OrderedDict[AdapterKey, tuple[EngineError, float]] = OrderedDict()

    @property
    def num_loading(self) -> int:
        with self._lock:
            return len(self._flights)

    @property
    def num_remembered_failures(self) -> int:
        with self._lock:
            return len(self._failures)

    def request(self, ref: AdapterRef) -> EngineError | None:
        """Make sure `ref` is in the host tier or on its way; the remembered error of a recent failure,
        or AdapterUnavailableError when `max_pending` loads are already queued or running."""
        key = (ref.adapter_id, ref.version)
        with self._lock:
            if key in self._flights or key in self._host:
                return None
            failure = self._failures.get(key)
            if failure is not None:
                if self._clock() < failure[1]:
                    return failure[0]
                del self._failures[key]
            if len(self._flights) >= self.max_pending:
                return AdapterUnavailableError(
                    f"adapter {ref.adapter_id!r}: {len(self._flights)} adapter loads pending; try again shortly"
                )
            self._flights[key] = self._pool.submit(self._load, ref, key)
        return None

    def wait(self, ref: AdapterRef, timeout_s: float | None = None) -> EngineError | None:
        """`request`, then block until that load has ended; its error, if it failed."""
        error = self.request(ref)
        if error is not None:
            return error
        key = (ref.adapter_id, ref.version)
        with self._lock:
            flight = self._flights.get(key)
        if flight is not None:
            flight.result(timeout_s)
        with self._lock:
            failure = self._failures.get(key)
        return None if failure is None else failure[0]

    def shutdown(self) -> None:
        """Stop taking loads; running ones finish on their threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _load(self, ref: AdapterRef, key: AdapterKey) -> None:
        started = time.perf_counter()
        error: EngineError | None = None
        try:
            with self._store.checkout(ref) as path:
                adapter = self._read(path, ref)
            self._host.put(key, adapter, stale=not self._is_current(key))
            self._stats.loaded(TIER, time.perf_counter() - started)
        except EngineError as exc:
            error = exc
        except Exception as exc:  # a bug or an unexpected library error: answer INTERNAL, keep serving
            logger.exception("loading adapter %s version %d failed", *key)
            error = EngineError(f"loading adapter {key[0]!r} version {key[1]} failed: {exc!r}")
        with self._lock:
            del self._flights[key]
            if error is not None:
                self._remember(key, error)
        if error is not None:
            logger.warning("adapter %s version %d: %s", key[0], key[1], error)
        self._on_done(key, error)

    def _remember(self, key: AdapterKey, error: EngineError) -> None:
        """Remember a failure; forget expired ones, and the oldest beyond the cap. Caller holds the lock."""
        now = self._clock()
        while self._failures and (
            len(self._failures) >= MAX_REMEMBERED_FAILURES or next(iter(self._failures.values()))[1] <= now
        ):
            self._failures.popitem(last=False)
        self._failures.pop(key, None)
        self._failures[key] = (error, now + self.failure_ttl_s)
