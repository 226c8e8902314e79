"""The content hash of a base model's weights: what an answer's lineage names the base by. Pure Python."""

from __future__ import annotations

import hashlib
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin")  # what transformers loads a checkpoint's weights from
_READ_BYTES = 1 << 20


def weight_files(model_path: str) -> list[Path]:
    """The checkpoint's weight files, sorted by name (shards in order); [] when it is not a directory."""
    root = Path(model_path)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)), key=lambda p: p.name)


def base_sha256(model_path: str) -> str:
    """sha256 hex digest over the weight files' bytes, file after file in sorted name order, streamed;
    "" when there are none to hash (a model path that is not a local directory)."""
    files = weight_files(model_path)
    if not files:
        return ""
    digest = hashlib.sha256()
    for path in files:
        with path.open("rb") as f:
            while block := f.read(_READ_BYTES):
                digest.update(block)
    return digest.hexdigest()
