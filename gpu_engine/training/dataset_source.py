"""Where a training dataset may be read from, and reading it without trusting the location.

A dataset uri is an absolute local path (or `file:///abs/path`) or `s3://bucket/key`. A local
path is resolved (symlinks, `..`) and must then lie under one of the allowed roots; it is opened
one path component at a time without following symlinks, so a link swapped in after the check
is refused too. Only regular files on a real filesystem are read: directories, devices, FIFOs,
sockets and the pseudo-files of /proc, /sys and the like are refused (a /proc file calls itself
regular). An S3 key must lie under an allowed `s3://bucket/prefix/`. The byte cap is checked
before reading (the file's or object's size) and while reading (a file that grows).

Pure Python; boto3 is imported only for s3:// uris.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from gpu_engine.errors import AdapterNotFoundError
from gpu_engine.uris import parse_s3_uri
from gpu_engine.training.errors import (
    DatasetNotFoundError,
    DatasetRefusedError,
    DatasetTooLargeError,
    DatasetUnavailableError,
)

MAX_DATASET_BYTES = 256 << 20
_READ_CHUNK_BYTES = 1 << 20
_MOUNTINFO = Path("/proc/self/mountinfo")
# filesystems whose "regular files" are kernel state, not data: never a dataset
_PSEUDO_FILESYSTEMS = frozenset(
    {
        "proc", "sysfs", "debugfs", "tracefs", "securityfs", "configfs", "efivarfs", "bpf", "pstore",
        "cgroup", "cgroup2", "devtmpfs", "devpts", "mqueue", "binfmt_misc", "fusectl", "nsfs", "rpc_pipefs",
    }
)
_S3_NOT_FOUND = {"NoSuchKey", "NoSuchBucket", "NotFound", "404"}
_S3_DENIED = {"AccessDenied", "403", "Forbidden"}


def check_dataset_roots(roots: Sequence[str]) -> None:
    """Raise ValueError unless every root is an absolute local directory path or an s3:// prefix."""
    for root in roots:
        if root.startswith("s3://"):
            _split_s3(root, ValueError)
        elif not os.path.isabs(root) or "\0" in root:
            raise ValueError(f"dataset root {root!r} must be an absolute directory path or s3://bucket/prefix/")


def read_dataset(uri: str, roots: Sequence[str], *, max_bytes: int, s3_endpoint_url: str | None = None) -> bytes:
    """The bytes of the dataset at `uri`, which must lie under one of `roots`.

    Raises DatasetRefusedError (outside the roots, not a regular file, not readable),
    DatasetNotFoundError, DatasetTooLargeError, DatasetUnavailableError (object store trouble).
    """
    if uri.startswith("s3://"):
        return _read_s3(uri, [r for r in roots if r.startswith("s3://")], max_bytes, s3_endpoint_url)
    if uri.startswith("file://"):
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            raise DatasetRefusedError(f"dataset {uri}: only file:///absolute/path uris are read")
        path = unquote(parts.path)
    elif "://" in uri:
        raise DatasetRefusedError(f"dataset {uri}: only local paths, file:// and s3:// uris are read")
    else:
        path = uri
    if "\0" in path or not os.path.isabs(path):
        raise DatasetRefusedError(f"dataset {uri}: a local dataset must be an absolute path")
    return _read_local(uri, Path(path), [r for r in roots if not r.startswith("s3://")], max_bytes)


def read_regular_file(path: str | Path, max_bytes: int) -> bytes:
    """A file whose location the caller chose itself (no roots), read as carefully as a dataset."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise DatasetNotFoundError(f"dataset not found: {path}") from exc
    return _read_open(fd, str(path), max_bytes)


def _read_local(uri: str, path: Path, roots: Sequence[str], max_bytes: int) -> bytes:
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise DatasetRefusedError(f"dataset {uri}: cannot be resolved ({type(exc).__name__})") from exc
    for root in roots:
        root_path = Path(root).resolve()
        if resolved != root_path and resolved.is_relative_to(root_path):
            return _read_under(uri, root_path, resolved.relative_to(root_path), max_bytes)
    if not roots:
        raise DatasetRefusedError(f"dataset {uri}: this worker reads no local datasets (no dataset root configured)")
    raise DatasetRefusedError(f"dataset {uri} is outside the worker's dataset roots")


def _read_under(uri: str, root: Path, relative: PurePath, max_bytes: int) -> bytes:
    """Open `root/relative` component by component, following no symlink, then read it."""
    try:
        dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for part in relative.parts[:-1]:
                next_fd = _open_directory(part, dir_fd, uri)
                os.close(dir_fd)
                dir_fd = next_fd
            name = relative.parts[-1]
            # refuse devices and FIFOs before opening them: opening one can block or act
            _check_regular(os.stat(name, dir_fd=dir_fd, follow_symlinks=False), uri, max_bytes)
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise DatasetNotFoundError(f"dataset not found: {uri}") from exc
    except PermissionError as exc:
        raise DatasetRefusedError(f"dataset {uri}: not readable by the worker") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a component became a symlink after it was resolved
            raise DatasetRefusedError(f"dataset {uri}: a symlink changed while it was opened") from exc
        raise
    return _read_open(fd, uri, max_bytes)


def _open_directory(name: str, dir_fd: int, uri: str) -> int:
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except NotADirectoryError:
        if stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            raise DatasetRefusedError(f"dataset {uri}: a symlink changed while it was opened") from None
        raise


def _read_open(fd: int, shown: str, max_bytes: int) -> bytes:
    try:
        _check_regular(os.fstat(fd), shown, max_bytes)
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        return _read_capped(f, shown, max_bytes)


def _check_regular(st: os.stat_result, shown: str, max_bytes: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise DatasetRefusedError(f"dataset {shown}: not a regular file (a directory, device, FIFO, socket or symlink)")
    if st.st_dev in _pseudo_filesystem_devices():
        raise DatasetRefusedError(f"dataset {shown}: not a regular file (a /proc, /sys or other kernel pseudo-file)")
    if st.st_size > max_bytes:
        raise DatasetTooLargeError(f"dataset {shown}: {st.st_size} bytes, over the cap of {max_bytes}")


def _read_capped(f: BinaryIO, shown: str, max_bytes: int) -> bytes:
    chunks, num_bytes = [], 0
    while chunk := f.read(_READ_CHUNK_BYTES):
        num_bytes += len(chunk)
        if num_bytes > max_bytes:
            raise DatasetTooLargeError(f"dataset {shown}: over the cap of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _pseudo_filesystem_devices() -> frozenset[int]:
    """st_dev of every mounted pseudo filesystem (Linux; empty where there is no mountinfo)."""
    try:
        text = _MOUNTINFO.read_text()
    except OSError:
        return frozenset()
    devices = set()
    for line in text.splitlines():
        mount, _, described = line.partition(" - ")
        fields = mount.split()
        if len(fields) >= 3 and described.split()[:1] and described.split()[0] in _PSEUDO_FILESYSTEMS:
            major, _, minor = fields[2].partition(":")
            devices.add(os.makedev(int(major), int(minor)))
    return frozenset(devices)


def _split_s3(uri: str, error: type[Exception]) -> tuple[str, str]:
    """(bucket, key or key prefix without slashes at either end) of an s3:// uri; the store's parser."""
    try:
        location = parse_s3_uri(uri)
    except AdapterNotFoundError as exc:
        raise error(str(exc)) from None
    return location.bucket, location.prefix


def _read_s3(uri: str, prefixes: Sequence[str], max_bytes: int, endpoint_url: str | None) -> bytes:
    bucket, key = _split_s3(uri, DatasetRefusedError)
    if not key or not any(_s3_covers(prefix, bucket, key) for prefix in prefixes):
        raise DatasetRefusedError(f"dataset {uri} is outside the worker's dataset bucket prefixes")
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    config = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"})
    try:
        client = boto3.session.Session().client("s3", endpoint_url=endpoint_url, region_name="us-east-1", config=config)
        size = client.head_object(Bucket=bucket, Key=key)["ContentLength"]
        if size > max_bytes:
            raise DatasetTooLargeError(f"dataset {uri}: {size} bytes, over the cap of {max_bytes}")
        if size == 0:
            return b""
        body = client.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{max_bytes}")["Body"]
        with body:
            return _read_capped(body, uri, max_bytes)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code"))
        if code in _S3_NOT_FOUND:
            raise DatasetNotFoundError(f"dataset not found: {uri}") from exc
        if code in _S3_DENIED:
            raise DatasetRefusedError(f"dataset {uri}: the worker's credentials may not read it") from exc
        raise DatasetUnavailableError(f"dataset {uri}: object store answered {code}") from exc
    except (BotoCoreError, OSError, ValueError) as exc:  # ValueError: boto3 refused the endpoint url
        raise DatasetUnavailableError(f"dataset {uri}: object store unreachable ({exc})") from exc


def _s3_covers(prefix_uri: str, bucket: str, key: str) -> bool:
    prefix_bucket, prefix = _split_s3(prefix_uri, ValueError)
    return bucket == prefix_bucket and (not prefix or key.startswith(prefix + "/"))
