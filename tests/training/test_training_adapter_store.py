"""Installing adapters into the adapter root: versioned side by side, switched atomically, checksummed,
confined to the root, and never touching another id (nested ids survive an overwrite)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from gpu_engine.training import adapter_checksum
from gpu_engine.adapter_files import CURRENT_LINK, VERSIONS_DIR, current_version_dir
from gpu_engine.training.adapter_store import (
    KEEP_VERSIONS,
    MARKER_FILE,
    AdapterStoreError,
    install_adapter,
    installed,
    is_taken,
)

FILES = ("adapter_config.json", "adapter_model.safetensors")


def fake_adapter(path: Path, weights: bytes) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text('{"r": 8}')
    (path / "adapter_model.safetensors").write_bytes(weights)
    return path


def install(source: Path, root: Path, adapter_id: str, job_id: str = "job", overwrite: bool = False):
    checksum = adapter_checksum(source)
    return install_adapter(source, root, adapter_id, job_id=job_id, checksum=checksum, overwrite=overwrite)


def tree(path: Path) -> dict[str, bytes]:
    """Every regular file under `path` (links followed), by relative path."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_install_then_overwrite_bumps_the_version(tmp_path) -> None:
    root = tmp_path / "adapters"
    first = fake_adapter(tmp_path / "job1", b"one")
    done = install(first, root, "acme/sql", "job1")
    assert (done.version, done.job_id) == (1, "job1")
    assert done.path == str(root.resolve() / "acme" / "sql" / VERSIONS_DIR / "v1")
    assert installed(root, "acme/sql") == done and is_taken(root, "acme/sql")
    assert adapter_checksum(root / "acme" / "sql") == adapter_checksum(done.path) == done.checksum

    second = fake_adapter(tmp_path / "job2", b"two")
    with pytest.raises(AdapterStoreError, match="already exists"):
        install(second, root, "acme/sql", "job2")
    again = install(second, root, "acme/sql", "job2", overwrite=True)
    assert (again.version, again.job_id) == (2, "job2") and installed(root, "acme/sql") == again
    assert (root / "acme" / "sql" / "adapter_model.safetensors").read_bytes() == b"two"
    assert Path(done.path, "adapter_model.safetensors").read_bytes() == b"one"  # version 1 is untouched
    versions = root / "acme" / "sql" / VERSIONS_DIR
    assert sorted(p.name for p in versions.iterdir()) == [CURRENT_LINK, "v1", "v2"]  # no staging left


def test_overwriting_a_parent_id_leaves_nested_ids_alone(tmp_path) -> None:
    """The issue's row: overwrite of `acme` deleted `acme/sql` and `acme/summary` with it."""
    root = tmp_path / "adapters"
    for adapter_id, weights in (("acme/sql", b"sql"), ("acme/summary", b"summary"), ("acme/x/deep", b"deep")):
        install(fake_adapter(tmp_path / adapter_id, weights), root, adapter_id)
    nested = {i: tree(root / i) for i in ("acme/sql", "acme/summary", "acme/x/deep")}
    assert not is_taken(root, "acme")  # a directory of nested ids is not an adapter
    for n, weights in enumerate((b"parent-1", b"parent-2", b"parent-3"), start=1):
        done = install(fake_adapter(tmp_path / f"parent{n}", weights), root, "acme", f"p{n}", overwrite=True)
        assert done.version == n and (root / "acme" / "adapter_model.safetensors").read_bytes() == weights
        assert {i: tree(root / i) for i in nested} == nested
    assert installed(root, "acme/sql").version == 1


def test_overwriting_a_hand_placed_or_old_layout_adapter_keeps_its_children(tmp_path) -> None:
    root = tmp_path / "adapters"
    old = fake_adapter(root / "acme", b"old")  # the single-directory layout, with its marker
    (old / MARKER_FILE).write_text(json.dumps({"job_id": "j0", "version": 4, "checksum": adapter_checksum(old)}))
    child = tree(fake_adapter(root / "acme" / "sql", b"child"))
    assert installed(root, "acme").version == 4 and installed(root, "acme").path == str(old.resolve())
    done = install(fake_adapter(tmp_path / "new", b"new"), root, "acme", "j1", overwrite=True)
    assert done.version == 5 and installed(root, "acme") == done
    assert (root / "acme" / "adapter_model.safetensors").read_bytes() == b"new"
    assert not (root / "acme" / MARKER_FILE).exists()
    assert tree(root / "acme" / "sql") == child


def test_old_versions_are_pruned_to_the_newest_few(tmp_path) -> None:
    root = tmp_path / "adapters"
    for n in range(1, 6):
        install(fake_adapter(tmp_path / f"v{n}", bytes([n])), root, "a", overwrite=True)
    versions = root / "a" / VERSIONS_DIR
    kept = sorted(p.name for p in versions.iterdir() if p.name != CURRENT_LINK)
    assert kept == [f"v{n}" for n in range(6 - KEEP_VERSIONS, 6)]
    assert os.readlink(versions / CURRENT_LINK) == "v5"


def test_readers_always_see_one_whole_version(tmp_path) -> None:
    """While versions are installed back to back, every read of the current version is one version's pair."""
    root = tmp_path / "adapters"
    sources = [fake_adapter(tmp_path / f"s{n}", f"weights-{n}".encode()) for n in range(12)]
    for source in sources:
        (source / "adapter_config.json").write_text(json.dumps({"r": 8, "n": source.name}))
    install(sources[0], root, "a")
    torn: list[tuple[bytes, bytes]] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                path = current_version_dir(root / "a")
                config = json.loads((path / "adapter_config.json").read_text())
                weights = (path / "adapter_model.safetensors").read_bytes()
            except FileNotFoundError:  # pruned between resolving and reading: a reader retries
                continue
            if weights != f"weights-{config['n'][1:]}".encode():
                torn.append((config, weights))

    reader = threading.Thread(target=read)
    reader.start()
    for source in sources[1:]:
        install(source, root, "a", overwrite=True)
    stop.set()
    reader.join()
    assert not torn


def test_corrupt_files_and_escaping_or_reserved_ids_are_refused(tmp_path) -> None:
    root = tmp_path / "adapters"
    source = fake_adapter(tmp_path / "job", b"weights")
    with pytest.raises(AdapterStoreError, match="do not match checksum"):
        install_adapter(source, root, "acme/a", job_id="job", checksum="0" * 64, overwrite=False)
    assert not is_taken(root, "acme/a")
    install(source, root, "acme")
    for bad_id in (f"{VERSIONS_DIR}/x", f"acme/{VERSIONS_DIR}/v9", "acme/adapter_config.json", "/etc/passwd", "../x"):
        with pytest.raises(AdapterStoreError, match="inside the adapter root"):
            install(source, root, bad_id, overwrite=True)
    assert installed(root, "acme").version == 1


def test_checksum_covers_config_and_weights(tmp_path) -> None:
    a = fake_adapter(tmp_path / "a", b"w")
    b = fake_adapter(tmp_path / "b", b"w")
    assert adapter_checksum(a) == adapter_checksum(b)
    (b / "adapter_config.json").write_text('{"r": 16}')
    assert adapter_checksum(a) != adapter_checksum(b)
