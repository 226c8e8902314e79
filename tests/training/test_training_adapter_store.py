"""Installing adapters into the adapter root: atomic, versioned, checksummed, confined to the root."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpu_engine.training import adapter_checksum
from gpu_engine.training.adapter_store import STAGING_DIR, AdapterStoreError, install_adapter, installed, is_taken


def fake_adapter(path: Path, weights: bytes) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text('{"r": 8}')
    (path / "adapter_model.safetensors").write_bytes(weights)
    return path


def test_install_then_overwrite_bumps_the_version(tmp_path) -> None:
    root = tmp_path / "adapters"
    first = fake_adapter(tmp_path / "job1", b"one")
    done = install_adapter(first, root, "acme/sql", job_id="job1", checksum=adapter_checksum(first), overwrite=False)
    assert (done.version, done.job_id) == (1, "job1")
    assert installed(root, "acme/sql") == done and is_taken(root, "acme/sql")
    assert adapter_checksum(root / "acme" / "sql") == done.checksum

    second = fake_adapter(tmp_path / "job2", b"two")
    with pytest.raises(AdapterStoreError, match="already exists"):
        install_adapter(second, root, "acme/sql", job_id="job2", checksum=adapter_checksum(second), overwrite=False)
    again = install_adapter(second, root, "acme/sql", job_id="job2", checksum=adapter_checksum(second), overwrite=True)
    assert (again.version, again.job_id) == (2, "job2")
    assert (root / "acme" / "sql" / "adapter_model.safetensors").read_bytes() == b"two"
    assert list((root / STAGING_DIR).iterdir()) == []


def test_corrupt_files_and_escaping_ids_are_refused(tmp_path) -> None:
    root = tmp_path / "adapters"
    source = fake_adapter(tmp_path / "job", b"weights")
    with pytest.raises(AdapterStoreError, match="do not match checksum"):
        install_adapter(source, root, "acme/a", job_id="job", checksum="0" * 64, overwrite=False)
    assert not is_taken(root, "acme/a")
    for bad_id in (f"{STAGING_DIR}/x", "/etc/passwd"):
        with pytest.raises(AdapterStoreError, match="inside the adapter root"):
            install_adapter(source, root, bad_id, job_id="job", checksum=adapter_checksum(source), overwrite=True)


def test_checksum_covers_config_and_weights(tmp_path) -> None:
    a = fake_adapter(tmp_path / "a", b"w")
    b = fake_adapter(tmp_path / "b", b"w")
    assert adapter_checksum(a) == adapter_checksum(b)
    (b / "adapter_config.json").write_text('{"r": 16}')
    assert adapter_checksum(a) != adapter_checksum(b)
