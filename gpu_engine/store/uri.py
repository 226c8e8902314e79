"""Where an adapter's files live: a local directory or an S3 prefix, worked out from an AdapterRef.

Pure Python. `file:///abs/dir` and `s3://bucket/prefix` name one adapter's directory; a ref
without a uri is looked up by id under the store's root (`<root>/<adapter_id>/`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from gpu_engine.adapter_ref import AdapterRef
from gpu_engine.adapters import check_adapter_id, resolve_adapter_dir
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


def locate(ref: AdapterRef, root: Path | S3Location | None) -> Path | S3Location:
    """The adapter's directory: the ref's own uri, else `<root>/<adapter_id>`.

    A local result is an existing directory; whether its files are there is the reader's check.
    """
    if ref.uri:
        if is_s3_uri(ref.uri):
            return parse_s3_uri(ref.uri)
        path = parse_file_uri(ref.uri)
        if not path.is_dir():
            raise AdapterNotFoundError(f"adapter {ref.adapter_id!r}: {ref.uri} is not a directory")
        return path
    if isinstance(root, S3Location):
        check_adapter_id(ref.adapter_id)
        return root.child(ref.adapter_id)
    return resolve_adapter_dir(root, ref.adapter_id)
