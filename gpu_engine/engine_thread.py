"""EngineThread: drives Engine.step() on a daemon thread and delivers events to callbacks.

The thread sleeps on a condition while nothing is runnable: no requests, or only requests whose
adapter is still loading (the engine's loader wakes it when a load ends). Every submitted
request gets exactly one final event: from the engine, or INTERNAL if a step blows up, or
CANCELLED at stop(). The adapter registry calls (`register_adapter`, `retire_adapter`,
`prefetch`) and `cache_stats` pass through to the engine.

`LoopHandoff` carries events from the engine thread to an asyncio loop: the events of one step
reach the loop in one hand-off (one `call_soon_threadsafe`), not one per token.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from gpu_engine.adapter_ref import AdapterRef
from gpu_engine.cache_stats import CacheStats
from gpu_engine.errors import EngineError
from gpu_engine.types import FinishReason, GenerationEvent, GenerationRequest

if TYPE_CHECKING:  # an annotation only: the service imports LoopHandoff without loading torch
    from gpu_engine.engine import Engine

logger = logging.getLogger(__name__)

EventCallback = Callable[[GenerationEvent], None]


class EngineThread:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._callbacks: dict[str, EventCallback] = {}
        self._wakeup = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.num_steps = 0  # engine steps run so far (written by the engine thread only)
        engine.add_wakeup_listener(self._notify)

    @property
    def num_outstanding(self) -> int:
        with self._wakeup:
            return len(self._callbacks)

    @property
    def native_id(self) -> int | None:
        """The engine thread's OS thread id (for per-thread CPU accounting); None before `start`."""
        return self._thread.native_id if self._thread is not None else None

    @property
    def cache_stats(self) -> CacheStats:
        return self.engine.cache_stats

    @property
    def base_name(self) -> str | None:
        return self.engine.base_name

    @property
    def base_sha256(self) -> str:
        """sha256 of the base's weight files, computed once when the engine loaded it."""
        return self.engine.base_sha256

    def register_adapter(self, ref: AdapterRef) -> None:
        """A new adapter version (any thread); see Engine.register_adapter."""
        self.engine.register_adapter(ref)

    def retire_adapter(self, adapter_id: str) -> None:
        """An adapter deleted from the registry (any thread); see Engine.retire_adapter."""
        self.engine.retire_adapter(adapter_id)

    def prefetch(self, adapter_id: str) -> None:
        self.engine.prefetch(adapter_id)

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("EngineThread already started")
        self._thread = threading.Thread(target=self._loop, name="lorastream-engine", daemon=True)
        self._thread.start()

    def submit(self, request: GenerationRequest, on_event: EventCallback) -> None:
        """Queue a request; `on_event` is called on the engine thread, once per event."""
        with self._wakeup:
            if self._stopping:
                raise RuntimeError("EngineThread is stopped")
            if request.request_id in self._callbacks:
                raise ValueError(f"request_id {request.request_id!r} is already in flight")
            self._callbacks[request.request_id] = on_event
            self.engine.add_request(request)
            self._wakeup.notify()

    def abort(self, request_id: str) -> None:
        with self._wakeup:
            self.engine.abort(request_id)
            self._wakeup.notify()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the thread; requests still in flight end with CANCELLED."""
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._fail_outstanding(FinishReason.CANCELLED, None, "engine stopped")

    def _loop(self) -> None:
        while True:
            with self._wakeup:
                while not self._stopping and not self.engine.has_runnable_work():
                    self._wakeup.wait(self.engine.idle_timeout_s())
                if self._stopping:
                    return
            self.num_steps += 1
            try:
                events = self.engine.step()
            except Exception as exc:  # an engine bug: fail what is in flight, keep serving
                logger.exception("engine step raised")
                self._fail_outstanding(FinishReason.ERROR, EngineError.code, repr(exc), drop=True)
                continue
            self._deliver(events)

    def _notify(self) -> None:
        with self._wakeup:
            self._wakeup.notify()

    def _deliver(self, events: list[GenerationEvent]) -> None:
        """One step's events: LoopHandoff callbacks get theirs in one hand-off, others one by one."""
        with self._wakeup:
            targets = []
            for event in events:
                callback = self._callbacks.get(event.request_id)
                if callback is not None and event.is_final:
                    del self._callbacks[event.request_id]
                targets.append(callback)
        handoffs: dict[LoopHandoff, list] = {}
        for event, callback in zip(events, targets):
            if callback is None:
                continue
            if isinstance(callback, HandoffCallback):
                handoffs.setdefault(callback.handoff, []).append((callback.fn, callback.args, event))
                continue
            try:
                callback(event)
            except Exception:
                logger.exception("on_event callback for %s raised", event.request_id)
        for handoff, items in handoffs.items():
            try:
                handoff.put(items)
            except Exception:  # the loop is closed: its requests' events have nowhere to go
                logger.exception("hand-off of %d events failed", len(items))

    def _fail_outstanding(
        self, reason: FinishReason, code: str | None, message: str, drop: bool = False
    ) -> None:
        with self._wakeup:
            pending, self._callbacks = self._callbacks, {}
            if drop:
                self.engine.drop_all()
        for request_id, callback in pending.items():
            event = GenerationEvent(request_id=request_id, finish_reason=reason, error_code=code, error_message=message)
            try:
                callback(event)
            except Exception:
                logger.exception("on_event callback for %s raised", request_id)


class LoopHandoff:
    """Runs engine callbacks on an asyncio loop, one wake-up per engine step.

    `bind(fn, *args)` makes the callback to give `EngineThread.submit`. The EngineThread hands a
    step's events for one LoopHandoff over together (`put`), after the step; called directly (by
    another engine), a bound callback hands its one event over at once. The loop is woken
    (`call_soon_threadsafe`) only when nothing is waiting yet, then runs `fn(*args, event)` for every
    waiting event in arrival order (a request's events stay in order) and calls `after_batch()`
    once. Safe under the GIL: the flag is cleared before the queue is drained, so events put during
    a drain are run by it or schedule the next.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, after_batch: Callable[[], None] | None = None) -> None:
        self._loop = loop
        self._after_batch = after_batch
        self._queue: deque[list[tuple[Callable[..., None], tuple, GenerationEvent]]] = deque()
        self._scheduled = False
        self.num_wakeups = 0  # loop wake-ups so far (a measure of batching)
        self.num_events = 0  # events run on the loop so far

    def bind(self, fn: Callable[..., None], *args: object) -> HandoffCallback:
        """The callback that runs `fn(*args, event)` on the loop for each event."""
        return HandoffCallback(self, fn, args)

    def put(self, items: list[tuple[Callable[..., None], tuple, GenerationEvent]]) -> None:
        """Queue `(fn, args, event)` items from any thread; wakes the loop unless a wake-up is pending."""
        self._queue.append(items)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        self._scheduled = False
        self.num_wakeups += 1
        queue = self._queue
        while queue:
            for fn, args, event in queue.popleft():
                self.num_events += 1
                try:
                    fn(*args, event)
                except Exception:  # one caller's bug must not lose the other events of the batch
                    logger.exception("event callback for %s raised", event.request_id)
        if self._after_batch is not None:
            self._after_batch()


class HandoffCallback:
    """An `EventCallback` bound to a LoopHandoff (see LoopHandoff.bind)."""

    __slots__ = ("handoff", "fn", "args")

    def __init__(self, handoff: LoopHandoff, fn: Callable[..., None], args: tuple) -> None:
        self.handoff, self.fn, self.args = handoff, fn, args

    def __call__(self, event: GenerationEvent) -> None:
        self.handoff.put([(self.fn, self.args, event)])
