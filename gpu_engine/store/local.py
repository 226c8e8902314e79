"""LocalStore: adapters in a local directory, `<root>/<adapter_id>/`, or at a ref's file:// uri."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from gpu_engine.adapter_ref import AdapterRef
from gpu_engine.errors import AdapterChecksumError, AdapterMissingFileError, AdapterNotFoundError
from gpu_engine.store.bounds import AdapterBounds
from gpu_engine.store.protocol import AdapterStore
from gpu_engine.uris import S3Location
from gpu_engine.adapter_files import ADAPTER_FILES, adapter_checksum


def verify_checksum(path: Path, ref: AdapterRef) -> None:
    """Raise AdapterChecksumError when the files do not hash to the ref's checksum ("" = not checked)."""
    if not ref.checksum:
        return
    missing = [name for name in ADAPTER_FILES if not (path / name).is_file()]
    if missing:
        raise AdapterMissingFileError(f"adapter {ref.adapter_id!r}: {', '.join(missing)} missing")
    actual = adapter_checksum(path)
    if ref.checksum and actual != ref.checksum:
        raise AdapterChecksumError(
            f"adapter {ref.adapter_id!r} version {ref.version}: files hash to {actual[:12]}…,"
            f" the registry announced {ref.checksum[:12]}…"
        )


def checkout_local(bounds: AdapterBounds, path: Path, ref: AdapterRef) -> Path:
    """The checked directory to read at a located local `path` (see AdapterBounds.local_dir), checksum verified."""
    real = bounds.local_dir(path, ref)
    verify_checksum(real, ref)
    return real


class LocalStore:
    """Files are read in place (nothing is copied); refs with an s3:// uri go to `remote`."""

    def __init__(self, bounds: AdapterBounds, remote: AdapterStore | None = None) -> None:
        self.bounds = bounds
        self.remote = remote

    @contextlib.contextmanager
    def checkout(self, ref: AdapterRef) -> Iterator[Path]:
        location = self.bounds.locate(ref)
        if isinstance(location, S3Location):
            if self.remote is None:
                raise AdapterNotFoundError(f"adapter {ref.adapter_id!r}: no remote store for {ref.uri}")
            with self.remote.checkout(ref) as path:
                yield path
            return
        yield checkout_local(self.bounds, location, ref)
