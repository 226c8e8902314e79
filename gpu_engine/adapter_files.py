"""The files of a PEFT-format adapter, the checksum that names its content, and where an installed
adapter keeps its versions. No torch.

An adapter id names a directory, and ids nest (`acme` and `acme/sql`), so an id's own files live
beside the directories of the ids below it:

```
<root>/acme/
    adapter_config.json        -> .lorastream/current/adapter_config.json   (PEFT can load <root>/acme)
    adapter_model.safetensors  -> .lorastream/current/adapter_model.safetensors
    .lorastream/v1/  .lorastream/v2/  .lorastream/current -> v2              (one symlink switches versions)
    sql/                                                                    (the id acme/sql: never touched)
```
An adapter placed by hand (the two files directly in its directory, no `.lorastream/`) is read as is.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
VERSIONS_DIR = ".lorastream"  # no adapter-id segment may start with this (see is_reserved_segment)
CURRENT_LINK = "current"
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


def is_reserved_segment(segment: str) -> bool:
    """Id segments that would name the version store or a file of the id above them."""
    return segment.startswith(VERSIONS_DIR) or segment in ADAPTER_FILES


def current_version_dir(adapter_dir: str | Path) -> Path:
    """The directory to read for an adapter: its installed current version, else the directory itself.

    Resolved once, so both files are read from one version even if a new one is installed meanwhile.
    """
    link = Path(adapter_dir) / VERSIONS_DIR / CURRENT_LINK
    return link.resolve() if link.is_symlink() else Path(adapter_dir)
