"""LocalStore and uri parsing: root lookup, file:// override within the roots, traversal, checksum."""

from __future__ import annotations

import shutil

import pytest

from gpu_engine.adapter_ref import AdapterRef
from gpu_engine.errors import AdapterChecksumError, AdapterMissingFileError, AdapterNotFoundError
from gpu_engine.store import LocalStore, S3Location
from gpu_engine.uris import parse_file_uri, parse_s3_uri
from gpu_engine.adapter_files import adapter_checksum
from tests.store.conftest import bounds


def checkout(store, ref):
    with store.checkout(ref) as path:
        return path


def test_root_lookup_and_file_uri_override(built_adapters, tmp_path):
    store = LocalStore(bounds(built_adapters, tmp_path))
    assert checkout(store, AdapterRef("r8-qv")) == built_adapters / "r8-qv"
    elsewhere = shutil.copytree(built_adapters / "r4-all", tmp_path / "v3")
    assert checkout(store, AdapterRef("r8-qv", version=3, uri=elsewhere.as_uri())) == elsewhere
    assert checkout(LocalStore(bounds(None, tmp_path)), AdapterRef("any", uri=elsewhere.as_uri())) == elsewhere


@pytest.mark.parametrize(
    "ref",
    [
        AdapterRef("nope"),
        AdapterRef("../store-adapters"),
        AdapterRef("a/../../etc"),
        AdapterRef("/etc"),
        AdapterRef("x", uri="file:///no/such/dir"),
        AdapterRef("x", uri="file://host/share/x"),
        AdapterRef("x", uri="file:///tmp/../etc"),
        AdapterRef("x", uri="relative/dir"),
        AdapterRef("x", uri="http://example.com/a"),
        AdapterRef("x", uri="s3://bucket/a"),  # no remote store attached
    ],
)
def test_unknown_or_escaping_refs_are_not_found(built_adapters, ref):
    with pytest.raises(AdapterNotFoundError):
        checkout(LocalStore(bounds(built_adapters)), ref)


def test_no_root_finds_nothing(built_adapters):
    with pytest.raises(AdapterNotFoundError):
        checkout(LocalStore(bounds(None)), AdapterRef("r8-qv"))


def test_checksum_is_verified_for_local_files(built_adapters, tmp_path):
    path = shutil.copytree(built_adapters / "r8-qv", tmp_path / "a")
    good = adapter_checksum(path)
    store = LocalStore(bounds(tmp_path))
    assert checkout(store, AdapterRef("a", checksum=good)) == path
    with pytest.raises(AdapterChecksumError):
        checkout(store, AdapterRef("a", checksum="0" * 64))
    (path / "adapter_model.safetensors").unlink()
    with pytest.raises(AdapterMissingFileError):
        checkout(store, AdapterRef("a", checksum=good))


@pytest.mark.parametrize(
    ("uri", "location"),
    [
        ("s3://bucket/prefix/a", S3Location("bucket", "prefix/a")),
        ("s3://my.bucket-1/a/", S3Location("my.bucket-1", "a")),
        ("s3://bucket", S3Location("bucket", "")),
        ("s3://Bucket/a", None),
        ("s3://b/a", None),
        ("s3://bucket/a/../b", None),
        ("s3://bucket/a//b", None),
        ("s3://bucket/a?versionId=1", None),
        ("file:///x", None),
    ],
)
def test_parse_s3_uri(uri, location):
    if location is None:
        with pytest.raises(AdapterNotFoundError):
            parse_s3_uri(uri)
    else:
        assert parse_s3_uri(uri) == location
        assert location.child("x").key("f") == ("x/f" if not location.prefix else f"{location.prefix}/x/f")


def test_parse_file_uri_unquotes():
    assert str(parse_file_uri("file:///srv/adapters/my%20adapter")) == "/srv/adapters/my adapter"
    assert str(parse_file_uri("file://localhost/srv/a")) == "/srv/a"
