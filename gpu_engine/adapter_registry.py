"""AdapterRegistry: which version of each adapter new requests get. Thread-safe.

Fed by the registry listener (consumers/inference/adapters_topic.py) through `register`/`retire`. An id never
registered resolves to `AdapterRef(id)`, version 0, looked up in the configured store; a retired
id resolves to nothing (ADAPTER_NOT_FOUND) until it is registered again.
"""

from __future__ import annotations

import threading

from gpu_engine.adapter_ref import AdapterRef
from gpu_engine.adapters import check_adapter_id
from gpu_engine.errors import AdapterNotFoundError
from gpu_engine.seq_state import AdapterKey


class AdapterRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refs: dict[str, AdapterRef] = {}
        self._retired: set[str] = set()

    def resolve(self, adapter_id: str) -> AdapterRef:
        """The version to serve; raises AdapterNotFoundError for a retired or malformed id."""
        with self._lock:
            ref = self._refs.get(adapter_id)
            if ref is not None:
                return ref
            if adapter_id in self._retired:
                raise AdapterNotFoundError(f"adapter {adapter_id!r} was retired")
        check_adapter_id(adapter_id)
        return AdapterRef(adapter_id)

    def register(self, ref: AdapterRef) -> None:
        with self._lock:
            self._refs[ref.adapter_id] = ref
            self._retired.discard(ref.adapter_id)

    def retire(self, adapter_id: str) -> None:
        with self._lock:
            self._refs.pop(adapter_id, None)
            self._retired.add(adapter_id)

    def current_version(self, adapter_id: str) -> int | None:
        """The version new requests get; None when retired."""
        with self._lock:
            ref = self._refs.get(adapter_id)
            if ref is not None:
                return ref.version
            return None if adapter_id in self._retired else 0

    def is_current(self, key: AdapterKey) -> bool:
        return self.current_version(key[0]) == key[1]
