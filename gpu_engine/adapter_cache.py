"""AdapterCache: the engine's adapter tiers wired together — registry, loader, host and device tiers.

The life of a request's adapter (see docs/adapter-cache.md):
1. `resolve` + `prefetch` (any thread, from Engine.add_request): the registry names the version,
   and its load starts at once unless it is resident, so loading overlaps queueing.
2. `accept` (engine thread): the sequence waits for that version and pins it in the host tier;
   while the version loads, its waiting sequences are *blocked* (the scheduler skips them and the
   runner thread sleeps if nothing else is runnable). A recently failed load refuses it at once.
3. `admit` (engine thread; the scheduler asks just before giving a KV slot): a device hit pins
   the slot; otherwise the host copy goes into a slot, evicting least recently used unpinned
   ones. False (stay waiting) while the version loads or pinned slots leave no room.
4. `release` (engine thread) when the sequence ends, however it ends: unpins what it holds.
`begin_step` (engine thread) applies what other threads reported: ended loads (blocked
sequences are unblocked, or failed with the load's error) and superseded or retired versions.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from gpu_engine.adapter_loader import AdapterLoader
from gpu_engine.adapter_ref import AdapterRef
from gpu_engine.adapter_registry import AdapterRegistry
from gpu_engine.adapters import LoraAdapter, read_adapter
from gpu_engine.cache_stats import CacheStats
from gpu_engine.config import EngineConfig
from gpu_engine.device_cache import TIER as DEVICE_TIER
from gpu_engine.device_cache import DeviceCache
from gpu_engine.errors import AdapterUnavailableError, DeviceBudgetError, EngineError
from gpu_engine.host_cache import TIER as HOST_TIER
from gpu_engine.host_cache import HostCache
from gpu_engine.lora_bank import LoraBank
from gpu_engine.model_spec import ModelSpec
from gpu_engine.segments import BankSlot
from gpu_engine.seq_state import AdapterKey, SeqState
from gpu_engine.store import AdapterBounds, AdapterStore

STORE_TIER = "store"  # where a request's adapter was when it arrived, if in neither memory tier


def superseded(adapter_id: str, current: int | None) -> Callable[[AdapterKey], bool]:
    """Matches the versions of `adapter_id` other than `current` (every version when None: retired)."""
    return lambda key: key[0] == adapter_id and key[1] != current


class AdapterCache:
    def __init__(
        self,
        config: EngineConfig,
        spec: ModelSpec,
        bank: LoraBank,
        store: AdapterStore,
        stats: CacheStats,
        on_news: Callable[[], None],
    ) -> None:
        def read(path: Path, ref: AdapterRef):
            return read_adapter(path, ref.adapter_id, spec, bank.dtype, config.max_lora_rank, config.base_name)

        self.stats = stats
        self.bounds = AdapterBounds.from_config(config)
        self.registry = AdapterRegistry()
        self.host = HostCache(config.host_cache_bytes, stats)
        self.device = DeviceCache(bank, config.device_cache_bytes, stats)
        self.loader = AdapterLoader(
            store, read, self.host, stats, config.load_workers, self._on_load_done,
            max_pending=config.max_pending_adapter_loads, is_current=self.registry.is_current,
        )
        self._on_news = on_news  # wakes the engine thread; called without any lock held
        self._lock = threading.Lock()
        self._done: list[tuple[AdapterKey, EngineError | None]] = []  # loads ended since begin_step
        self._invalidated: set[str] = set()  # ids with a new version or retired since begin_step
        # engine-thread state
        self._waiting: dict[AdapterKey, dict[str, SeqState]] = {}  # accepted, not admitted
        self._blocked: set[AdapterKey] = set()  # versions whose load the waiting sequences await
        self._num_blocked = 0  # waiting sequences of blocked versions
        self._refused: dict[str, tuple[SeqState, EngineError]] = {}  # by admit, to answer after schedule
        self._held: set[AdapterKey] = set()  # kept resident by load_adapter(hold=True)

    # --- any thread ------------------------------------------------------------------------

    def resolve(self, adapter_id: str) -> AdapterRef:
        """The version a new request gets; raises AdapterNotFoundError (retired, malformed id)."""
        return self.registry.resolve(adapter_id)

    def prefetch(self, ref: AdapterRef) -> str:
        """Start loading `ref` into the host tier unless it is resident or loading. Never blocks.

        Returns the tier it was in: "device", "host" or "store" (neither: loading, or a load just
        started). A failure is remembered by the loader and answered to the requests that need it.
        """
        key = (ref.adapter_id, ref.version)
        if key in self.device:
            return DEVICE_TIER
        tier = HOST_TIER if key in self.host else STORE_TIER
        self.loader.request(ref)
        return tier

    def register(self, ref: AdapterRef) -> None:
        """A new version: requests resolved from now on get it; other versions leave once unused.

        Raises AdapterPathRefusedError (AdapterNotFoundError for a malformed uri or id) and changes
        nothing when the ref's location is outside the configured roots.
        """
        self.bounds.locate(ref)
        self.registry.register(ref)
        self._invalidate(ref.adapter_id)
        self.prefetch(ref)

    def retire(self, adapter_id: str) -> None:
        """Deleted from the registry: later requests get ADAPTER_NOT_FOUND; running ones finish."""
        self.registry.retire(adapter_id)
        self._invalidate(adapter_id)

    def _invalidate(self, adapter_id: str) -> None:
        self.host.invalidate(superseded(adapter_id, self.registry.current_version(adapter_id)))
        with self._lock:
            self._invalidated.add(adapter_id)
        self._on_news()  # the device tier is the engine thread's: it applies this in begin_step

    def _on_load_done(self, key: AdapterKey, error: EngineError | None) -> None:
        with self._lock:
            self._done.append((key, error))
        self._on_news()

    # --- engine thread ---------------------------------------------------------------------

    @property
    def num_blocked(self) -> int:
        """Waiting sequences whose adapter is still loading: no step can help them."""
        return self._num_blocked

    def has_news(self) -> bool:
        """Something for `begin_step` to apply: invalidations, or an ended load that waiting
        sequences need (a load nobody waits for is applied with the next step, and wakes none)."""
        with self._lock:
            if self._invalidated:
                return True
            done = [key for key, _ in self._done]
        return any(key in self._waiting for key in done)

    def next_blocked_deadline(self) -> float | None:
        """The earliest `deadline_s` of a blocked sequence (it must expire even if its load hangs)."""
        deadlines = [
            seq.request.deadline_s
            for key in self._blocked
            for seq in self._waiting.get(key, {}).values()
            if seq.request.deadline_s is not None
        ]
        return min(deadlines, default=None)

    def accept(self, seq: SeqState) -> None:
        """Start waiting for the sequence's adapter; raises the error of a recent failed load of it."""
        key, ref = seq.adapter_key, seq.adapter_ref
        if key is None:
            return
        on_device = key in self.device
        if not on_device:
            if key in self.host:
                self.stats.hit(HOST_TIER)
            else:
                self.stats.miss(HOST_TIER)
        self.host.pin(key)  # before looking: a load that lands now must stay for this sequence
        if not on_device and key not in self.host and key not in self._blocked:
            error = self.loader.request(ref)
            if error is not None:
                self.host.unpin(key)
                raise error
            self._block(key)
        self._waiting.setdefault(key, {})[seq.request_id] = seq
        if key in self._blocked:
            self._num_blocked += 1

    def admit(self, seq: SeqState) -> bool:
        """Give the sequence its device slot (pinned) if it can run now; see the module docstring."""
        key = seq.adapter_key
        if key is None:
            return True
        slot = self.device.acquire(key)
        if slot is None:
            slot = self._place(seq)
            if slot is None:
                return False
        self._leave_waiting(seq)
        self.host.unpin(key)
        seq.bank_slot = slot
        return True

    def take_refused(self) -> list[tuple[SeqState, EngineError]]:
        """Sequences `admit` found can never run (their load failed, or too large): answer each with the error."""
        refused = list(self._refused.values())
        self._refused.clear()
        return refused

    def release(self, seq: SeqState) -> None:
        """The sequence ended (finished, cancelled, failed, expired): drop its pin. Idempotent."""
        key = seq.adapter_key
        if key is None:
            return
        if seq.bank_slot is not None:
            seq.bank_slot = None
            self.device.release(key)
        elif seq.request_id in self._waiting.get(key, ()):
            self._leave_waiting(seq)
            self.host.unpin(key)

    def begin_step(self) -> list[tuple[SeqState, EngineError]]:
        """Apply ended loads and invalidations; returns the waiting sequences whose load failed."""
        self.device.report_loads()
        with self._lock:
            done, self._done = self._done, []
            invalidated, self._invalidated = self._invalidated, set()
        failed = []
        for key, error in done:
            if key in self._blocked:
                self._blocked.discard(key)
                self._num_blocked -= len(self._waiting.get(key, ()))
            if error is not None:
                failed += [(seq, error) for seq in self._waiting.get(key, {}).values()]
        for adapter_id in invalidated:
            stale = superseded(adapter_id, self.registry.current_version(adapter_id))
            for key in [k for k in self._held if stale(k)]:
                self._held.discard(key)
                self.device.release(key)
            self.device.invalidate(stale)
        return failed

    def load_now(self, ref: AdapterRef, hold: bool, timeout_s: float | None = None) -> BankSlot:
        """Load `ref` into the device tier, blocking; `hold` keeps it resident (pinned) until it is
        superseded or retired. Raises the load's EngineError, or AdapterUnavailableError if it
        cannot fit."""
        key = (ref.adapter_id, ref.version)
        slot = self.device.acquire(key)
        if slot is None:
            self.host.pin(key)
            try:
                error = self.loader.wait(ref, timeout_s)
                if error is not None:
                    raise error
                adapter = self.host.get(key)
                self._check_fits(key, adapter)
                if not self.device.can_fit(adapter):
                    raise AdapterUnavailableError(f"adapter {ref.adapter_id!r}: device cache full of pinned adapters")
                slot = self.device.insert(key, adapter, stale=not self.registry.is_current(key))
            finally:
                self.host.unpin(key)
        if hold and key not in self._held:
            self._held.add(key)
        else:
            self.device.release(key)
        return slot

    def _place(self, seq: SeqState) -> BankSlot | None:
        """Copy the sequence's adapter from the host tier into a device slot; None if it cannot now."""
        key, ref = seq.adapter_key, seq.adapter_ref
        if key in self._blocked:
            return None
        adapter = self.host.get(key)
        if adapter is None:  # evicted from the device (and host) since the sequence arrived
            error = self.loader.request(ref)
            if error is not None:
                self._refuse(key, error)
            else:
                self._block(key)
            return None
        try:
            self._check_fits(key, adapter)
            if not self.device.can_fit(adapter):
                return None  # running sequences pin the room it needs: wait for one to finish
            return self.device.insert(key, adapter, stale=not self.registry.is_current(key))
        except EngineError as exc:  # too large for the budget, or the device is out of memory
            self._refuse(key, exc)
            return None

    def _check_fits(self, key: AdapterKey, adapter: LoraAdapter) -> None:
        """Raises DeviceBudgetError when the adapter could never fit: not even beside the held adapters alone."""
        if not self.device.fits(adapter, sorted(self._held)):
            raise DeviceBudgetError(
                f"adapter {key[0]!r} ({adapter.num_bytes} bytes of weights) does not fit the device cache budget"
                f" of {self.device.max_bytes} bytes (LoRA bank buffers included) beside the"
                f" {len(self._held)} preloaded adapters"
            )

    def _refuse(self, key: AdapterKey, error: EngineError) -> None:
        for seq in self._waiting.get(key, {}).values():
            self._refused[seq.request_id] = (seq, error)

    def _block(self, key: AdapterKey) -> None:
        self._blocked.add(key)
        self._num_blocked += len(self._waiting.get(key, ()))

    def _leave_waiting(self, seq: SeqState) -> None:
        key = seq.adapter_key
        waiting = self._waiting[key]
        del waiting[seq.request_id]
        if not waiting:
            del self._waiting[key]
        if key in self._blocked:
            self._num_blocked -= 1

