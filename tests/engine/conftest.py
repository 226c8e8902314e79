"""Tiny checkpoints shared by the engine tests, built once per session in a temp dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpu_engine.tiny import build_tiny_adapter, build_tiny_model, build_tiny_tokenizer
from tests.engine.engine_helpers import ORACLE_ADAPTERS


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tokenizer")
    build_tiny_tokenizer(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("llama"), arch="llama", tokenizer_dir=tiny_tokenizer_dir)


@pytest.fixture(scope="session")
def adapter_root(tmp_path_factory, tiny_model_dir) -> Path:
    root = tmp_path_factory.mktemp("adapters")
    for seed, (name, rank, alpha, targets, rslora) in enumerate(ORACLE_ADAPTERS, start=1):
        build_tiny_adapter(
            tiny_model_dir, root / name, r=rank, alpha=alpha, target_modules=targets, seed=seed, use_rslora=rslora
        )
    return root
