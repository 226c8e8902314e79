"""Tiny checkpoints and data for the training tests, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.task_data import write_task


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A 2-layer, 64-wide Llama with its tokenizer (saved like any Hugging Face checkpoint)."""
    from gpu_engine.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("train-base") / "model")


@pytest.fixture(scope="session")
def task_file(tmp_path_factory) -> Path:
    return write_task(tmp_path_factory.mktemp("train-data") / "task.jsonl", n=64)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models train fastest on one thread; on a busy 2-core box, two threads spin-wait."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
