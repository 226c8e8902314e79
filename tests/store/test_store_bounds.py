"""AdapterBounds: uris only under the configured roots and buckets, no symlink out of a root, byte caps
checked before a byte is read (locally) or downloaded (S3)."""

from __future__ import annotations

import http.server
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from gpu_engine.adapter_ref import AdapterRef
from gpu_engine.cache_stats import CacheStats
from gpu_engine.errors import AdapterMissingFileError, AdapterNotFoundError
from gpu_engine.store import AdapterPathRefusedError, AdapterTooLargeError, DiskCache, LocalStore, S3Fetcher, S3Store
from gpu_engine.uris import S3Location
from tests.store.conftest import ADAPTER_FILES, bounds, upload

CONFIG, WEIGHTS = ADAPTER_FILES

# (uri, expected): a location, or the error class (PathRefused: a well-formed uri outside the bounds)
LOCATE_CASES = [
    ("file:///srv/adapters/acme/sql", Path("/srv/adapters/acme/sql")),
    ("file:///srv/adapters", Path("/srv/adapters")),
    ("file:///srv/published/acme/.lorastream/v3", Path("/srv/published/acme/.lorastream/v3")),
    ("file:///srv/adapters-evil/x", AdapterPathRefusedError),  # a sibling whose name starts alike
    ("file:///etc", AdapterPathRefusedError),
    ("file:///srv/adapters/../../etc", AdapterNotFoundError),
    ("file://host/srv/adapters/x", AdapterNotFoundError),
    ("s3://models/adapters/acme/v1", S3Location("models", "adapters/acme/v1")),
    ("s3://models/adapters", S3Location("models", "adapters")),
    ("s3://models/adapters-evil/x", AdapterPathRefusedError),
    ("s3://models/other/x", AdapterPathRefusedError),
    ("s3://models", AdapterPathRefusedError),
    ("s3://team-bucket/anything/here", S3Location("team-bucket", "anything/here")),
    ("s3://someone-elses-bucket/adapters/x", AdapterPathRefusedError),
    ("s3://models/adapters/../x", AdapterNotFoundError),
    ("http://example.com/x", AdapterNotFoundError),
]


@pytest.mark.parametrize(("uri", "expected"), LOCATE_CASES)
def test_uris_are_located_only_inside_the_roots(uri, expected):
    allowed = bounds("/srv/adapters", "/srv/published", "s3://models/adapters", "s3://team-bucket")
    if isinstance(expected, type):
        with pytest.raises(expected) as info:
            allowed.locate(AdapterRef("x", uri=uri))
        refused = expected is AdapterPathRefusedError
        assert (info.value.code == AdapterPathRefusedError.code) is refused
    else:
        assert allowed.locate(AdapterRef("x", uri=uri)) == expected


def test_ids_without_uri_are_found_under_the_root_only():
    assert bounds("/srv/adapters").locate(AdapterRef("acme/sql")) == Path("/srv/adapters/acme/sql")
    assert bounds("s3://models/adapters").locate(AdapterRef("acme")) == S3Location("models", "adapters/acme")
    for ref, root in ((AdapterRef("../x"), "/srv/adapters"), (AdapterRef("a/.lorastream/v1"), "/srv/adapters"),
                      (AdapterRef("a"), None)):
        with pytest.raises(AdapterNotFoundError):
            bounds(root).locate(ref)


def test_a_root_given_through_a_symlink_accepts_uris_written_either_way(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    allowed = bounds(tmp_path / "link")
    for uri in ((real / "a").as_uri(), (tmp_path / "link" / "a").as_uri()):
        assert allowed.locate(AdapterRef("a", uri=uri))


@pytest.fixture
def root(tmp_path, built_adapters) -> Path:
    root = tmp_path / "root"
    shutil.copytree(built_adapters / "r8-qv", root / "good")
    return root


def checkout(store, ref):
    with store.checkout(ref) as path:
        return path


def test_a_weights_file_linked_out_of_the_root_is_refused(root, tmp_path):
    outside = shutil.copytree(root / "good", tmp_path / "outside")
    linked = shutil.copytree(root / "good", root / "linked")
    (linked / WEIGHTS).unlink()
    (linked / WEIGHTS).symlink_to(outside / WEIGHTS)
    store = LocalStore(bounds(root))
    for ref in (AdapterRef("linked"), AdapterRef("linked", uri=linked.as_uri())):
        with pytest.raises(AdapterPathRefusedError, match="links outside"):
            checkout(store, ref)
    (linked / WEIGHTS).unlink()
    (linked / WEIGHTS).symlink_to(root / "good" / WEIGHTS)  # a link that stays inside is fine
    assert checkout(store, AdapterRef("linked")) == linked


def test_a_directory_linked_out_of_the_root_is_refused(root, tmp_path):
    outside = shutil.copytree(root / "good", tmp_path / "outside")
    (root / "dirlink").symlink_to(outside)
    with pytest.raises(AdapterPathRefusedError):
        checkout(LocalStore(bounds(root)), AdapterRef("dirlink"))


def test_special_files_and_dangling_links(root):
    odd = shutil.copytree(root / "good", root / "odd")
    (odd / WEIGHTS).unlink()
    os.mkfifo(odd / WEIGHTS)  # reading a FIFO would block a loader thread forever
    with pytest.raises(AdapterPathRefusedError, match="not a regular file"):
        checkout(LocalStore(bounds(root)), AdapterRef("odd"))
    (odd / WEIGHTS).unlink()
    (odd / WEIGHTS).symlink_to(root / "nowhere")  # dangling, inside: simply missing
    with pytest.raises(AdapterMissingFileError):
        checkout(LocalStore(bounds(root)), AdapterRef("odd", checksum="0" * 64))


@pytest.mark.parametrize(("name", "caps"), [(CONFIG, {"max_adapter_config_bytes": 100}), (WEIGHTS, {})])
def test_files_over_the_cap_are_refused_before_they_are_read(root, name, caps):
    big = shutil.copytree(root / "good", root / "big")
    with open(big / name, "r+b") as f:  # sparse: the default weights cap is 8 GiB, this is 9
        f.truncate(100 + 1 if name == CONFIG else 9 << 30)
    started = time.monotonic()
    with pytest.raises(AdapterTooLargeError) as info:  # a checksum would have hashed all of it first
        checkout(LocalStore(bounds(root, **caps)), AdapterRef("big", checksum="0" * 64))
    assert time.monotonic() - started < 1 and info.value.code == AdapterTooLargeError.code


@pytest.mark.parametrize(
    ("name", "caps"), [(CONFIG, {"max_adapter_config_bytes": 64}), (WEIGHTS, {"max_adapter_weights_bytes": 1000})]
)
def test_s3_objects_over_the_cap_are_refused_before_download(
    s3_endpoint, s3_client, bucket, built_adapters, tmp_path, name, caps
):
    upload(s3_client, bucket, "adapters/a", built_adapters / "r8-qv")
    cache = DiskCache(tmp_path / "disk", None, CacheStats())
    store = S3Store(bounds(f"s3://{bucket}/adapters", **caps), cache, S3Fetcher(s3_endpoint, max_attempts=1))
    with pytest.raises(AdapterTooLargeError, match=name):
        checkout(store, AdapterRef("a"))
    assert cache.keys() == [] and list(cache.directory.iterdir()) == []


class _ChunkedUnannounced(http.server.BaseHTTPRequestHandler):
    """Answers every GET with 64 KiB in chunked encoding: no Content-Length to check up front."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for _ in range(64):
            self.wfile.write(b"400\r\n" + b"x" * 1024 + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *args):
        pass


def test_an_unannounced_length_is_capped_while_copying(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ChunkedUnannounced)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        fetcher = S3Fetcher(f"http://127.0.0.1:{server.server_address[1]}", max_attempts=1)
        allowed = bounds("s3://bucket/adapters", max_adapter_config_bytes=4096)
        store = S3Store(allowed, DiskCache(tmp_path, None, CacheStats()), fetcher)
        with pytest.raises(AdapterTooLargeError, match="larger than the cap"):
            checkout(store, AdapterRef("a"))
    finally:
        server.shutdown()
        server.server_close()
