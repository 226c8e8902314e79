"""The base's content hash: sha256 over the weight files' bytes in sorted name order, nothing else."""

from __future__ import annotations

import hashlib

from gpu_engine.base_hash import base_sha256, weight_files


def test_shards_are_hashed_in_name_order_and_other_files_are_not(tmp_path):
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"second")
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"first")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "tokenizer.json").write_text("{}")
    assert [p.name for p in weight_files(str(tmp_path))] == [
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
    ]
    assert base_sha256(str(tmp_path)) == hashlib.sha256(b"firstsecond").hexdigest()
    (tmp_path / "config.json").write_text('{"changed": true}')  # config is not weights
    assert base_sha256(str(tmp_path)) == hashlib.sha256(b"firstsecond").hexdigest()


def test_bin_checkpoints_count_and_streaming_matches_one_read(tmp_path):
    payload = bytes(range(256)) * 10_000  # larger than one read block
    (tmp_path / "pytorch_model.bin").write_bytes(payload)
    assert base_sha256(str(tmp_path)) == hashlib.sha256(payload).hexdigest()


def test_no_local_weights_hash_to_empty(tmp_path):
    assert base_sha256(str(tmp_path)) == ""
    assert base_sha256(str(tmp_path / "not-there")) == ""
    assert base_sha256("org/some-hub-model") == ""
