"""`train-worker --publish-uri s3://…`: a trained adapter is uploaded per version and announced by
that uri, which the inference side's store then serves (moto's S3 server stands in for MinIO)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from consumers.training.adapter_release import AdapterPublishError, publish_files
from consumers.training.config import TrainWorkerConfig
from gpu_engine.adapter_ref import AdapterRef
from gpu_engine.cache_stats import CacheStats
from gpu_engine.config import EngineConfig
from gpu_engine.store import AdapterBounds, DiskCache, S3Fetcher, S3Store
from gpu_engine.adapter_files import adapter_checksum
from gpu_engine.training.adapter_store import InstalledAdapter


def _config(tmp_path: Path, **overrides) -> TrainWorkerConfig:
    return TrainWorkerConfig(
        base_model_path=str(tmp_path / "base"), adapter_root=str(tmp_path / "adapters"),
        work_dir=str(tmp_path / "work"), **overrides,
    )


@pytest.fixture
def installed_adapter(tmp_path: Path, tiny_base: Path) -> InstalledAdapter:
    from gpu_engine.tiny import build_tiny_adapter

    path = build_tiny_adapter(tiny_base, tmp_path / "adapters" / "acme" / "sql")
    return InstalledAdapter(job_id="j", version=3, checksum=adapter_checksum(path), path=str(path))


def test_without_a_publish_uri_the_local_directory_is_announced(tmp_path, installed_adapter) -> None:
    uri = publish_files(_config(tmp_path), "acme/sql", installed_adapter)
    assert uri == Path(installed_adapter.path).as_uri()


def test_a_published_adapter_is_uploaded_per_version_and_served_back(
    tmp_path, installed_adapter, s3_endpoint, s3_client
) -> None:
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket)
    config = _config(tmp_path, publish_uri=f"s3://{bucket}/adapters", s3_endpoint_url=s3_endpoint)
    uri = publish_files(config, "acme/sql", installed_adapter)
    assert uri == f"s3://{bucket}/adapters/acme/sql/v3"
    bounds = AdapterBounds.from_config(EngineConfig("/m", adapter_uri_roots=(f"s3://{bucket}/adapters",)))
    store = S3Store(bounds, DiskCache(tmp_path / "disk", None, CacheStats()), S3Fetcher(s3_endpoint))
    ref = AdapterRef("acme/sql", version=3, uri=uri, checksum=installed_adapter.checksum)
    with store.checkout(ref) as path:
        assert adapter_checksum(path) == installed_adapter.checksum


def test_an_unreachable_store_fails_the_publish_with_a_typed_error(tmp_path, installed_adapter) -> None:
    config = _config(tmp_path, publish_uri="s3://bucket/adapters", s3_endpoint_url="http://127.0.0.1:1")
    with pytest.raises(AdapterPublishError):
        publish_files(config, "acme/sql", installed_adapter)


def test_a_publish_uri_must_be_s3(tmp_path) -> None:
    with pytest.raises(ValueError, match="s3://"):
        _config(tmp_path, publish_uri="/some/dir")
