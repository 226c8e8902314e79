"""Adapter stores: where adapter files come from (a local root, S3-compatible storage).

`open_store(config, stats)` builds the store the engine uses; `store.checkout(ref)` is a context
manager yielding a local directory holding `adapter_config.json` + `adapter_model.safetensors`
for that version, kept on disk (pinned in the disk tier) until the block exits. Blocking and
thread-safe: it runs on the engine's loader threads, never on the engine thread. Every location
is first checked against the configured roots and byte caps (AdapterBounds). See
docs/adapter-store.md.
"""

from __future__ import annotations

from gpu_engine.cache_stats import CacheStats
from gpu_engine.config import EngineConfig
from gpu_engine.store.bounds import AdapterBounds, AdapterPathRefusedError, AdapterTooLargeError
from gpu_engine.store.disk_cache import DiskCache
from gpu_engine.store.local import LocalStore
from gpu_engine.store.protocol import AdapterStore
from gpu_engine.store.s3 import S3Fetcher, S3Store
from gpu_engine.uris import S3Location

__all__ = [
    "AdapterBounds", "AdapterPathRefusedError", "AdapterStore", "AdapterTooLargeError", "DiskCache", "LocalStore",
    "S3Fetcher", "S3Location", "S3Store", "open_store",
]


def open_store(config: EngineConfig, stats: CacheStats) -> AdapterStore:
    """S3Store for an `s3://` adapter_root, else LocalStore; either serves refs with explicit uris.

    Nothing touches the network until the first remote checkout (a configured disk_cache_dir is
    created and its previous contents adopted at once; the default temp dir only when needed).
    """
    bounds = AdapterBounds.from_config(config)
    cache = DiskCache(config.disk_cache_dir, config.disk_cache_bytes, stats)
    remote = S3Store(bounds, cache, S3Fetcher(config.s3_endpoint_url))
    return remote if isinstance(bounds.root, S3Location) else LocalStore(bounds, remote=remote)
