"""Adapter stores: where adapter files come from (a local root, S3-compatible storage).

`open_store(config, stats)` builds the store the engine uses; `store.checkout(ref)` is a context
manager yielding a local directory holding `adapter_config.json` + `adapter_model.safetensors`
for that version, kept on disk (pinned in the disk tier) until the block exits. Blocking and
thread-safe: it runs on the engine's loader threads, never on the engine thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from gpu_engine.adapter_ref import AdapterRef
from gpu_engine.adapters import resolve_adapter_dir
from gpu_engine.cache_stats import CacheStats
from gpu_engine.config import EngineConfig


class AdapterStore(Protocol):
    def checkout(self, ref: AdapterRef) -> contextlib.AbstractContextManager[Path]: ...


class LocalStore:
    """Adapters under one local directory: `<root>/<adapter_id>/`, or a registry's file:// uri."""

    def __init__(self, root: str | Path | None) -> None:
        self.root = root

    @contextlib.contextmanager
    def checkout(self, ref: AdapterRef) -> Iterator[Path]:
        yield resolve_adapter_dir(self.root, ref.adapter_id)


def open_store(config: EngineConfig, stats: CacheStats) -> AdapterStore:
    return LocalStore(config.adapter_root)
