"""The files of a PEFT-format adapter and the checksum that names its content. No torch."""

from __future__ import annotations

import hashlib
from pathlib import Path

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
_CHUNK_BYTES = 1 << 20


def adapter_checksum(adapter_dir: str | Path) -> str:
    """sha256 over the adapter's files, each as name, NUL, size, NUL, bytes (fixed order).

    Hex digest; equal checksums mean equal config and weights.
    """
    digest = hashlib.sha256()
    for name in ADAPTER_FILES:
        path = Path(adapter_dir) / name
        digest.update(f"{name}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK_BYTES):
                digest.update(chunk)
    return digest.hexdigest()


def is_adapter_dir(path: str | Path) -> bool:
    return all((Path(path) / name).is_file() for name in ADAPTER_FILES)
