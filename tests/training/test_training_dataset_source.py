"""Where a dataset may be read from: roots, symlinks, special files, byte caps, S3 prefixes."""

from __future__ import annotations

import io
import os
from pathlib import Path, PurePath

import pytest

from gpu_engine.training.dataset import parse_rows
from gpu_engine.training.dataset_source import (
    _read_capped,
    _read_under,
    check_dataset_roots,
    read_dataset,
    read_regular_file,
)
from gpu_engine.training.errors import (
    DatasetNotFoundError,
    DatasetRefusedError,
    DatasetTooLargeError,
    TrainErrorCode,
)

ROW = b'{"prompt": "a", "completion": "b"}\n'
CAP_BYTES = 1000


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """<tmp>/root (the allowed root) and <tmp>/outside, with links in, out and across."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "good.jsonl").write_bytes(ROW)
    (root / "sub" / "nested.jsonl").write_bytes(ROW)
    (root / "big.jsonl").write_bytes(ROW * (CAP_BYTES // len(ROW) + 1))
    (outside / "secret.jsonl").write_bytes(ROW)
    (root / "link-in.jsonl").symlink_to(root / "sub" / "nested.jsonl")
    (root / "link-out.jsonl").symlink_to(outside / "secret.jsonl")
    (root / "dir-out").symlink_to(outside)
    (root / "loop").symlink_to(root / "loop")
    os.mkfifo(root / "fifo.jsonl")
    return tmp_path


@pytest.mark.parametrize(
    "uri, error",
    [
        ("{root}/good.jsonl", None),
        ("file://{root}/good.jsonl", None),
        ("file://localhost{root}/sub/nested.jsonl", None),
        ("{root}/link-in.jsonl", None),  # a symlink that stays inside the root
        ("{root}/sub/../good.jsonl", None),
        ("{outside}/secret.jsonl", DatasetRefusedError),
        ("{root}/../outside/secret.jsonl", DatasetRefusedError),
        ("{root}/link-out.jsonl", DatasetRefusedError),
        ("{root}/dir-out/secret.jsonl", DatasetRefusedError),
        ("{root}/loop", DatasetRefusedError),
        ("{root}", DatasetRefusedError),  # the root itself is a directory, not a dataset
        ("{root}/sub", DatasetRefusedError),
        ("{root}/fifo.jsonl", DatasetRefusedError),
        ("{root}/absent.jsonl", DatasetNotFoundError),
        ("{root}/good.jsonl/x", DatasetNotFoundError),
        ("{root}/big.jsonl", DatasetTooLargeError),
        ("relative/good.jsonl", DatasetRefusedError),
        ("file://otherhost{root}/good.jsonl", DatasetRefusedError),
        ("http://example.com/data.jsonl", DatasetRefusedError),
        ("{root}/good\0.jsonl", DatasetRefusedError),
    ],
)
def test_local_datasets_are_read_only_under_a_root(tree: Path, uri: str, error) -> None:
    uri = uri.format(root=tree / "root", outside=tree / "outside")
    if error is None:
        assert read_dataset(uri, [str(tree / "root")], max_bytes=CAP_BYTES) == ROW
    else:
        with pytest.raises(error):
            read_dataset(uri, [str(tree / "root")], max_bytes=CAP_BYTES)


def test_without_roots_no_local_file_is_read(tree: Path) -> None:
    with pytest.raises(DatasetRefusedError, match="no dataset root configured"):
        read_dataset(str(tree / "root" / "good.jsonl"), [], max_bytes=CAP_BYTES)


@pytest.mark.parametrize("path", ["/proc/self/mem", "/proc/self/environ", "/proc/self/status"])
def test_proc_files_are_not_regular_files_even_under_a_root_that_includes_them(path: str) -> None:
    with pytest.raises(DatasetRefusedError, match="not a regular file"):
        read_dataset(path, ["/proc"], max_bytes=CAP_BYTES)


def test_devices_are_refused_without_being_opened() -> None:
    with pytest.raises(DatasetRefusedError, match="not a regular file"):
        read_dataset("/dev/zero", ["/dev"], max_bytes=CAP_BYTES)


def test_a_symlink_swapped_in_after_resolving_is_not_followed(tree: Path) -> None:
    """`dir-out` stands for a directory replaced by a link between the check and the open."""
    with pytest.raises(DatasetRefusedError, match="symlink changed"):
        _read_under("x", (tree / "root").resolve(), PurePath("dir-out/secret.jsonl"), CAP_BYTES)
    with pytest.raises(DatasetRefusedError, match="symlink"):
        _read_under("x", (tree / "root").resolve(), PurePath("link-out.jsonl"), CAP_BYTES)


def test_the_byte_cap_holds_while_reading_a_file_that_grows() -> None:
    assert _read_capped(io.BytesIO(b"x" * CAP_BYTES), "d", CAP_BYTES) == b"x" * CAP_BYTES
    with pytest.raises(DatasetTooLargeError):
        _read_capped(io.BytesIO(b"x" * (CAP_BYTES + 1)), "d", CAP_BYTES)


def test_the_row_cap() -> None:
    assert len(parse_rows(ROW * 3 + b"\n\n", max_rows=3)) == 3
    with pytest.raises(DatasetTooLargeError, match="more than 3 rows"):
        parse_rows(ROW * 4, max_rows=3)


def test_a_trusted_path_is_still_read_as_a_regular_file(tree: Path) -> None:
    assert read_regular_file(tree / "root" / "good.jsonl", CAP_BYTES) == ROW
    for path in (tree / "root" / "fifo.jsonl", Path("/proc/self/mem"), tree / "root"):
        with pytest.raises(DatasetRefusedError):
            read_regular_file(path, CAP_BYTES)
    with pytest.raises(DatasetTooLargeError):
        read_regular_file(tree / "root" / "big.jsonl", CAP_BYTES)


@pytest.mark.parametrize(
    "roots, ok",
    [
        (["/srv/data", "s3://bucket/datasets/", "s3://bucket"], True),
        (["relative/dir"], False),
        (["s3://Bad_Bucket/x"], False),
        (["s3://bucket/a/../b"], False),
        (["/srv/\0"], False),
    ],
)
def test_configured_roots_are_checked(roots: list[str], ok: bool) -> None:
    if ok:
        check_dataset_roots(roots)
    else:
        with pytest.raises(ValueError):
            check_dataset_roots(roots)


def test_s3_datasets_only_under_a_bucket_prefix(s3_endpoint: str, s3_client) -> None:
    s3_client.create_bucket(Bucket="datasets-ok")
    s3_client.create_bucket(Bucket="datasets-other")
    s3_client.put_object(Bucket="datasets-ok", Key="tenant-a/train.jsonl", Body=ROW)
    s3_client.put_object(Bucket="datasets-ok", Key="tenant-a/big.jsonl", Body=ROW * 100)
    s3_client.put_object(Bucket="datasets-ok", Key="tenant-ab/train.jsonl", Body=ROW)
    s3_client.put_object(Bucket="datasets-other", Key="tenant-a/train.jsonl", Body=ROW)
    roots = ["/unused", "s3://datasets-ok/tenant-a/"]

    def read(uri: str) -> bytes:
        return read_dataset(uri, roots, max_bytes=CAP_BYTES, s3_endpoint_url=s3_endpoint)

    assert read("s3://datasets-ok/tenant-a/train.jsonl") == ROW
    for uri, error in [
        ("s3://datasets-ok/tenant-ab/train.jsonl", DatasetRefusedError),  # a prefix is a folder, not a string
        ("s3://datasets-other/tenant-a/train.jsonl", DatasetRefusedError),
        ("s3://datasets-ok/tenant-a/../tenant-ab/train.jsonl", DatasetRefusedError),
        ("s3://datasets-ok/tenant-a/absent.jsonl", DatasetNotFoundError),
        ("s3://datasets-ok/tenant-a/big.jsonl", DatasetTooLargeError),
    ]:
        with pytest.raises(error):
            read(uri)
    assert DatasetRefusedError.code is TrainErrorCode.DATASET_REFUSED
