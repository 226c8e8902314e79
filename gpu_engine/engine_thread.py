"""EngineThread: drives Engine.step() on a daemon thread and delivers events to callbacks.

The thread sleeps on a condition while nothing is runnable: no requests, or only requests whose
adapter is still loading (the engine's loader wakes it when a load ends). Every submitted
request gets exactly one final event: from the engine, or INTERNAL if a step blows up, or
CANCELLED at stop(). The adapter registry calls (`register_adapter`, `retire_adapter`,
`prefetch`) and `cache_stats` pass through to the engine.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from gpu_engine.adapter_ref import AdapterRef
from gpu_engine.cache_stats import CacheStats
from gpu_engine.engine import Engine
from gpu_engine.errors import EngineError
from gpu_engine.types import FinishReason, GenerationEvent, GenerationRequest

logger = logging.getLogger(__name__)

EventCallback = Callable[[GenerationEvent], None]


class EngineThread:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._callbacks: dict[str, EventCallback] = {}
        self._wakeup = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        engine.add_wakeup_listener(self._notify)

    @property
    def num_outstanding(self) -> int:
        with self._wakeup:
            return len(self._callbacks)

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
            try:
                events = self.engine.step()
            except Exception as exc:  # an engine bug: fail what is in flight, keep serving
                logger.exception("engine step raised")
                self._fail_outstanding(FinishReason.ERROR, EngineError.code, repr(exc), drop=True)
                continue
            for event in events:
                self._deliver(event)

    def _notify(self) -> None:
        with self._wakeup:
            self._wakeup.notify()

    def _deliver(self, event: GenerationEvent) -> None:
        with self._wakeup:
            callback = self._callbacks.get(event.request_id)
            if callback is not None and event.is_final:
                del self._callbacks[event.request_id]
        if callback is None:
            return
        try:
            callback(event)
        except Exception:
            logger.exception("on_event callback for %s raised", event.request_id)

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
