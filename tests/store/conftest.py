"""A real local S3 server (moto's server mode) and a tiny model with PEFT adapters, once per session."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest

from gpu_engine.cache_stats import CacheStats
from gpu_engine.config import EngineConfig
from gpu_engine.model_spec import ModelSpec
from gpu_engine.store import AdapterBounds, DiskCache, S3Fetcher, S3Store
from gpu_engine.tiny import build_tiny_adapter, build_tiny_model

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
# what build_tiny_model's defaults give
TINY_SPEC = ModelSpec(
    arch="llama", num_layers=2, hidden_size=64, intermediate_size=128, num_heads=4, num_kv_heads=2, head_dim=16,
    vocab_size=512, max_position_embeddings=1024, sliding_windows=(None, None), eos_token_ids=(2,),
)


def bounds(root: str | Path | None, *uri_roots: str | Path, **caps: int) -> AdapterBounds:
    """The bounds an engine configured with this root, these uri roots and byte caps would use."""
    config = EngineConfig(
        "/m", None if root is None else str(root), adapter_uri_roots=tuple(str(r) for r in uri_roots), **caps
    )
    return AdapterBounds.from_config(config)


@pytest.fixture
def bucket(s3_client) -> str:
    """A fresh, empty bucket per test."""
    name = f"b-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=name)
    return name


def upload(s3_client, bucket: str, prefix: str, adapter_dir: Path, names=ADAPTER_FILES) -> None:
    for name in names:
        s3_client.upload_file(str(adapter_dir / name), bucket, f"{prefix}/{name}")


@pytest.fixture
def s3_store(s3_endpoint, bucket, tmp_path) -> S3Store:
    """An S3Store rooted at s3://<bucket>/adapters, uris allowed anywhere in <bucket> (and in a bucket
    that does not exist), with an unlimited disk tier under tmp_path."""
    cache = DiskCache(tmp_path / "disk", None, CacheStats())
    allowed = bounds(f"s3://{bucket}/adapters", f"s3://{bucket}", "s3://no-such-bucket-here")
    return S3Store(allowed, cache, S3Fetcher(s3_endpoint, max_attempts=1))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("store-llama"), arch="llama")


@pytest.fixture(scope="session")
def built_adapters(tmp_path_factory, tiny_model_dir) -> Path:
    """`r8-qv` (q,v rank 8) and `r4-all` (all 7 projections, rank 4), built with PEFT."""
    root = tmp_path_factory.mktemp("store-adapters")
    build_tiny_adapter(tiny_model_dir, root / "r8-qv", r=8, alpha=16)
    targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    build_tiny_adapter(tiny_model_dir, root / "r4-all", r=4, alpha=8, target_modules=targets, seed=2)
    return root


def free_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
