"""S3Store against a real local S3 server (moto): layout, uri override, errors, checksum, open_store."""

from __future__ import annotations

import http.server
import threading
import time

import pytest
import torch

from gpu_engine.adapter_ref import AdapterRef
from gpu_engine.adapters import read_adapter
from gpu_engine.cache_stats import CacheStats
from gpu_engine.config import EngineConfig
from gpu_engine.errors import (
    AdapterChecksumError,
    AdapterMissingFileError,
    AdapterNotFoundError,
    AdapterUnavailableError,
)
from gpu_engine.store import DiskCache, LocalStore, S3Fetcher, S3Store, open_store
from gpu_engine.adapter_files import adapter_checksum
from tests.store.conftest import ADAPTER_FILES, TINY_SPEC, bounds, free_port, upload


def test_checkout_downloads_into_the_disk_tier_and_reads(s3_client, bucket, s3_store, built_adapters, tmp_path):
    upload(s3_client, bucket, "adapters/team/r8-qv", built_adapters / "r8-qv")
    s3_client.put_object(Bucket=bucket, Key="adapters/team/r8-qv/adapter_model.bin", Body=b"pickle")
    s3_client.put_object(Bucket=bucket, Key="adapters/team/r8-qv/README.md", Body=b"hi")
    ref = AdapterRef("team/r8-qv", version=2, checksum=adapter_checksum(built_adapters / "r8-qv"))
    with s3_store.checkout(ref) as path:
        assert path.is_relative_to(tmp_path / "disk") and path.name == "2"
        assert sorted(p.name for p in path.iterdir()) == sorted((*ADAPTER_FILES, "entry.json"))
        adapter = read_adapter(path, ref.adapter_id, TINY_SPEC, torch.float32, max_rank=64)
    assert adapter.rank == 8
    with s3_store.checkout(ref):  # second time from disk
        pass
    snap = s3_store.cache._stats.snapshot()["disk"]
    assert (snap.misses, snap.hits, snap.loads, snap.entries) == (1, 1, 1, 1)


def test_ref_uri_overrides_the_root(s3_client, bucket, s3_store, built_adapters):
    upload(s3_client, bucket, "elsewhere/v7", built_adapters / "r4-all")
    ref = AdapterRef("whatever", version=7, uri=f"s3://{bucket}/elsewhere/v7")
    with s3_store.checkout(ref) as path:
        assert read_adapter(path, "whatever", TINY_SPEC, torch.float32, 64).rank == 4


@pytest.mark.parametrize(
    ("uploaded", "ref", "error"),
    [
        ((), AdapterRef("nope"), AdapterNotFoundError),
        (("adapter_model.safetensors",), AdapterRef("a"), AdapterNotFoundError),  # no config: no adapter here
        (("adapter_config.json",), AdapterRef("a"), AdapterMissingFileError),
        (ADAPTER_FILES, AdapterRef("a", uri="s3://no-such-bucket-here/a"), AdapterNotFoundError),
        (ADAPTER_FILES, AdapterRef("../a"), AdapterNotFoundError),
        (ADAPTER_FILES, AdapterRef("a", checksum="0" * 64), AdapterChecksumError),
    ],
    ids=["unknown", "config-missing", "weights-missing", "no-bucket", "traversal", "checksum"],
)
def test_errors(s3_client, bucket, s3_store, built_adapters, uploaded, ref, error):
    upload(s3_client, bucket, "adapters/a", built_adapters / "r8-qv", names=uploaded)
    with pytest.raises(error):
        with s3_store.checkout(ref):
            pass
    assert s3_store.cache.keys() == []
    assert not list(s3_store.cache.directory.glob(".tmp-*"))


def test_closed_port_is_unavailable_quickly(tmp_path):
    fetcher = S3Fetcher(f"http://127.0.0.1:{free_port()}", connect_timeout_s=0.5, max_attempts=1)
    store = S3Store(bounds("s3://bucket/adapters"), DiskCache(tmp_path, None, CacheStats()), fetcher)
    started = time.monotonic()
    with pytest.raises(AdapterUnavailableError):
        with store.checkout(AdapterRef("a")):
            pass
    assert time.monotonic() - started < 3


def test_malformed_endpoint_is_unavailable(tmp_path):
    store = S3Store(bounds("s3://bucket/adapters"), DiskCache(tmp_path, None, CacheStats()), S3Fetcher("not a url"))
    with pytest.raises(AdapterUnavailableError):
        with store.checkout(AdapterRef("a")):
            pass


class _Always503(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        body = b"<Error><Code>ServiceUnavailable</Code><Message>down</Message></Error>"
        self.send_response(503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_server_error_is_unavailable(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Always503)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        fetcher = S3Fetcher(f"http://127.0.0.1:{server.server_address[1]}", max_attempts=1)
        store = S3Store(bounds("s3://bucket/adapters"), DiskCache(tmp_path, None, CacheStats()), fetcher)
        with pytest.raises(AdapterUnavailableError, match="503"):
            with store.checkout(AdapterRef("a")):
                pass
    finally:
        server.shutdown()
        server.server_close()


def test_concurrent_checkouts_of_one_version_download_once(s3_client, bucket, s3_store, built_adapters):
    upload(s3_client, bucket, "adapters/a", built_adapters / "r8-qv")
    paths = []

    def worker():
        with s3_store.checkout(AdapterRef("a", version=1)) as path:
            paths.append(path)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert len(paths) == 6 and len(set(paths)) == 1
    snap = s3_store.cache._stats.snapshot()["disk"]
    assert (snap.loads, snap.misses, snap.hits) == (1, 1, 5)


def test_open_store_picks_by_root_and_serves_explicit_uris(s3_endpoint, s3_client, bucket, built_adapters, tmp_path):
    upload(s3_client, bucket, "adapters/a", built_adapters / "r8-qv")
    common = dict(
        model_path="/m", s3_endpoint_url=s3_endpoint, disk_cache_dir=str(tmp_path / "disk"),
        adapter_uri_roots=(f"s3://{bucket}/adapters", str(built_adapters)),
    )
    remote = open_store(EngineConfig(adapter_root=f"s3://{bucket}/adapters", **common), CacheStats())
    local = open_store(EngineConfig(adapter_root=str(built_adapters), **common), CacheStats())
    nothing = open_store(EngineConfig(adapter_root=None, **common), CacheStats())
    assert isinstance(remote, S3Store) and isinstance(local, LocalStore) and isinstance(nothing, LocalStore)
    s3_ref = AdapterRef("x", version=1, uri=f"s3://{bucket}/adapters/a")
    file_ref = AdapterRef("y", uri=(built_adapters / "r4-all").as_uri())
    for store in (remote, local, nothing):
        for ref in (s3_ref, file_ref):
            with store.checkout(ref) as path:
                assert (path / "adapter_model.safetensors").is_file()
    with remote.checkout(AdapterRef("a")) as path:
        assert path.is_relative_to(tmp_path / "disk")
    with local.checkout(AdapterRef("r8-qv")) as path:
        assert path == built_adapters / "r8-qv"
    with pytest.raises(AdapterNotFoundError):
        with nothing.checkout(AdapterRef("r8-qv")):
            pass


def test_an_uploaded_adapter_is_served_back(s3_endpoint, bucket, s3_store, built_adapters, tmp_path):
    """What the training worker publishes (S3Fetcher.upload) is what the store serves, checksum included."""
    from gpu_engine.adapter_ref import AdapterRef
    from gpu_engine.uris import parse_s3_uri
    from gpu_engine.adapter_files import adapter_checksum

    source = built_adapters / "r8-qv"
    uri = f"s3://{bucket}/published/acme/new/v3"
    S3Fetcher(endpoint_url=s3_endpoint).upload(source, parse_s3_uri(uri))
    ref = AdapterRef("acme/new", version=3, uri=uri, checksum=adapter_checksum(source))
    with s3_store.checkout(ref) as path:
        assert adapter_checksum(path) == adapter_checksum(source)
