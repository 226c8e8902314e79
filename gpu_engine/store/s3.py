"""S3Store: adapters in S3-compatible object storage, copied into the disk tier before use.

Layout `s3://bucket/prefix/<adapter_id>/adapter_config.json|adapter_model.safetensors`; a ref's
own `s3://bucket/key` uri overrides it (within AdapterBounds). Only those two objects are ever
fetched, each refused before its body is read when its length is over the cap. Credentials come
from boto3's usual chain (AWS_* environment, profile, instance role).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from pathlib import Path

from gpu_engine.adapter_ref import AdapterRef
from gpu_engine.adapters import CONFIG_FILE, WEIGHTS_FILE
from gpu_engine.errors import AdapterMissingFileError, AdapterNotFoundError, AdapterUnavailableError
from gpu_engine.store.bounds import AdapterBounds, AdapterTooLargeError
from gpu_engine.store.disk_cache import DiskCache
from gpu_engine.store.local import checkout_local
from gpu_engine.uris import S3Location

_NOT_FOUND_CODES = {"NoSuchKey", "NoSuchBucket", "NotFound", "404"}
_COPY_CHUNK_BYTES = 1 << 20


class S3Fetcher:
    """Downloads one adapter's two objects into a local directory. Thread-safe; the client is made on first use."""

    def __init__(
        self,
        endpoint_url: str | None = None,
        region_name: str = "us-east-1",
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 30.0,
        max_attempts: int = 3,
    ) -> None:
        self.endpoint_url = endpoint_url
        self.region_name = region_name
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.max_attempts = max_attempts
        self._client = None
        self._lock = threading.Lock()

    def _get_client(self):
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                config = Config(
                    connect_timeout=self.connect_timeout_s,
                    read_timeout=self.read_timeout_s,
                    retries={"max_attempts": self.max_attempts, "mode": "standard"},
                )
                session = boto3.session.Session()
                self._client = session.client(
                    "s3", endpoint_url=self.endpoint_url, region_name=self.region_name, config=config
                )
            return self._client

    def fetch(self, location: S3Location, bounds: AdapterBounds, dest: Path) -> None:
        """Write adapter_config.json then adapter_model.safetensors from `location` into `dest`.

        Raises AdapterTooLargeError, before its body is read, for an object over its cap in `bounds`.
        """
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            try:
                self._download(location, name, dest / name, bounds.max_file_bytes(name))
            except AdapterNotFoundError as exc:
                if name == CONFIG_FILE:
                    raise
                raise AdapterMissingFileError(f"{location}: {WEIGHTS_FILE} is missing (only safetensors is read)") from exc

    def upload(self, source: Path, location: S3Location) -> None:
        """Put an adapter directory's two files at `location`: weights first, the config last.

        Readers treat a missing config as "no adapter here", so a half-finished upload is never
        served. Raises AdapterUnavailableError when the store refuses or cannot be reached.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        for name in (WEIGHTS_FILE, CONFIG_FILE):
            key = location.key(name)
            try:
                self._get_client().upload_file(str(source / name), location.bucket, key)
            except (ClientError, BotoCoreError, OSError, ValueError) as exc:
                raise AdapterUnavailableError(f"cannot upload s3://{location.bucket}/{key}: {exc}") from exc

    def _download(self, location: S3Location, name: str, dest: Path, max_bytes: int) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        key = location.key(name)
        try:
            response = self._get_client().get_object(Bucket=location.bucket, Key=key)
            with response["Body"] as body:
                if response.get("ContentLength", 0) > max_bytes:  # the headers are in; the body is not read
                    raise AdapterTooLargeError(
                        f"s3://{location.bucket}/{key} has {response['ContentLength']} bytes; the cap is {max_bytes}"
                    )
                with dest.open("wb") as f:
                    _copy_at_most(body, f, max_bytes, f"s3://{location.bucket}/{key}")
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if error.get("Code") in _NOT_FOUND_CODES or status == 404:
                raise AdapterNotFoundError(f"s3://{location.bucket}/{key} not found") from exc
            raise AdapterUnavailableError(f"s3://{location.bucket}/{key}: {error.get('Code')} ({status})") from exc
        except (BotoCoreError, OSError, ValueError) as exc:  # ValueError: boto3 refused the endpoint url
            raise AdapterUnavailableError(f"s3://{location.bucket}/{key}: {exc}") from exc


def _copy_at_most(source, dest, max_bytes: int, what: str) -> None:
    """Copy a stream, refusing it once more than `max_bytes` have come (a server may send more than it announced)."""
    copied = 0
    while chunk := source.read(_COPY_CHUNK_BYTES):
        copied += len(chunk)
        if copied > max_bytes:
            raise AdapterTooLargeError(f"{what} is larger than the cap of {max_bytes} bytes")
        dest.write(chunk)


class S3Store:
    """Remote adapters through the disk tier; refs with a file:// uri are read in place."""

    def __init__(self, bounds: AdapterBounds, cache: DiskCache, fetcher: S3Fetcher) -> None:
        self.bounds = bounds
        self.cache = cache
        self.fetcher = fetcher

    @contextlib.contextmanager
    def checkout(self, ref: AdapterRef) -> Iterator[Path]:
        location = self.bounds.locate(ref)
        if not isinstance(location, S3Location):
            yield checkout_local(self.bounds, location, ref)
            return
        fetch = functools.partial(self.fetcher.fetch, location, self.bounds)
        with self.cache.checkout(str(location), ref.version, ref.checksum, fetch) as path:
            yield path
