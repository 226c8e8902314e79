"""Locations: `file:///abs/dir` and `s3://bucket/prefix` uris naming an adapter directory or a dataset. Pure Python, no torch.

Parsing only; whether a uri may be used is decided by AdapterBounds (gpu_engine/store/bounds.py) for adapters and by gpu_engine/training/dataset_source.py for datasets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from gpu_engine.errors import AdapterNotFoundError

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class S3Location:
    """A key prefix in a bucket; the adapter's files are `<prefix>/adapter_config.json` etc."""

    bucket: str
    prefix: str  # no leading or trailing "/"; "" = the bucket's top level

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def child(self, name: str) -> S3Location:
        return S3Location(self.bucket, self.key(name))

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def is_s3_uri(uri: str | None) -> bool:
    return bool(uri) and uri.startswith("s3://")


def parse_s3_uri(uri: str) -> S3Location:
    """`s3://bucket/some/prefix` -> S3Location; raises AdapterNotFoundError on anything else."""
    parts = urlsplit(uri)
    prefix = parts.path.strip("/")
    if parts.scheme != "s3" or not _BUCKET.match(parts.netloc) or parts.query or parts.fragment:
        raise AdapterNotFoundError(f"{uri!r} is not an s3://bucket/prefix uri")
    if prefix and any(p in ("", ".", "..") for p in prefix.split("/")):
        raise AdapterNotFoundError(f"{uri!r}: empty, '.' or '..' path segments are refused")
    return S3Location(parts.netloc, prefix)


def parse_file_uri(uri: str) -> Path:
    """`file:///abs/dir` -> Path; raises AdapterNotFoundError for relative paths or '..' segments."""
    parts = urlsplit(uri)
    path = unquote(parts.path)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost") or not path.startswith("/"):
        raise AdapterNotFoundError(f"{uri!r} is not a file:///absolute/path uri")
    if ".." in path.split("/") or "\0" in path:
        raise AdapterNotFoundError(f"{uri!r}: '..' path segments are refused")
    return Path(path)
