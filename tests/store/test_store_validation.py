"""read_adapter: each way an adapter can be wrong raises its own error class (and code)."""

from __future__ import annotations

import json
import shutil
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from gpu_engine.adapters import base_names_match, read_adapter
from gpu_engine.errors import (
    AdapterBaseMismatchError,
    AdapterCorruptError,
    AdapterInvalidError,
    AdapterMissingFileError,
    AdapterRankTooLargeError,
    AdapterUnsupportedError,
)
from gpu_engine.tiny import build_tiny_adapter, build_tiny_model
from tests.store.conftest import TINY_SPEC

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
Q_A = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
V_A = "base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight"
V_B = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"


@pytest.fixture
def adapter(tmp_path, built_adapters):
    """A private copy of r8-qv, free to be damaged."""
    return shutil.copytree(built_adapters / "r8-qv", tmp_path / "r8-qv")


def read(path, max_rank=64, base_name=None, dtype=torch.float32):
    return read_adapter(path, "a", TINY_SPEC, dtype, max_rank, base_name=base_name)


def edit_config(**changes):
    def damage(path):
        config = json.loads((path / CONFIG).read_text())
        config.update(changes)
        (path / CONFIG).write_text(json.dumps(config))

    return damage


def edit_tensors(edit):
    def damage(path):
        tensors = load_file(str(path / WEIGHTS))
        edit(tensors)
        save_file(tensors, str(path / WEIGHTS))

    return damage


def rename_first(new_key):
    def edit(tensors):
        tensors[new_key] = tensors.pop(Q_A)

    return edit


def set_value(key, value):
    def edit(tensors):
        tensors[key][0, 0] = value

    return edit


def truncate(path):
    data = (path / WEIGHTS).read_bytes()
    (path / WEIGHTS).write_bytes(data[: len(data) // 2])


def huge_header(path):
    data = (path / WEIGHTS).read_bytes()
    (path / WEIGHTS).write_bytes(struct.pack("<Q", 1 << 40) + data[8:])


CASES = [
    ("no-config", lambda p: (p / CONFIG).unlink(), AdapterMissingFileError),
    ("no-weights", lambda p: (p / WEIGHTS).unlink(), AdapterMissingFileError),
    ("truncated", truncate, AdapterCorruptError),
    ("garbage", lambda p: (p / WEIGHTS).write_bytes(b"\xff" * 100), AdapterCorruptError),
    ("huge-header", huge_header, AdapterCorruptError),
    ("nan", edit_tensors(set_value(Q_A, float("nan"))), AdapterCorruptError),
    ("inf-in-b", edit_tensors(set_value(V_B, float("-inf"))), AdapterCorruptError),
    ("layer-beyond-base", edit_tensors(rename_first(Q_A.replace("layers.0", "layers.7"))), AdapterBaseMismatchError),
    ("wrong-shapes", edit_tensors(lambda t: t.update({Q_A: torch.zeros(8, 32)})), AdapterBaseMismatchError),
    ("dora", edit_config(use_dora=True), AdapterUnsupportedError),
    ("modules-to-save", edit_config(modules_to_save=["lm_head"]), AdapterUnsupportedError),
    ("fan-in-fan-out", edit_config(fan_in_fan_out=True), AdapterUnsupportedError),
    ("lora-bias", edit_config(lora_bias=True), AdapterUnsupportedError),
    ("alora", edit_config(alora_invocation_tokens=[1, 2]), AdapterUnsupportedError),
    ("not-lora", edit_config(peft_type="IA3"), AdapterUnsupportedError),
    ("unknown-target", edit_tensors(rename_first(Q_A.replace("q_proj", "rotary"))), AdapterUnsupportedError),
    ("lm-head", edit_tensors(rename_first("base_model.model.lm_head.lora_A.weight")), AdapterUnsupportedError),
    ("int-weights", edit_tensors(lambda t: t.update({Q_A: t[Q_A].to(torch.int32)})), AdapterInvalidError),
    ("bad-json", lambda p: (p / CONFIG).write_text("{not json"), AdapterInvalidError),
    ("bad-r", edit_config(r="eight"), AdapterInvalidError),
    ("zero-rank-pattern", edit_config(rank_pattern={"v_proj": 0}), AdapterInvalidError),
    ("bad-pattern-regex", edit_config(alpha_pattern={"(": 4}), AdapterInvalidError),
    ("missing-b", edit_tensors(lambda t: t.pop(V_B)), AdapterInvalidError),
    ("rank-disagree", edit_tensors(lambda t: t.update({V_A: t[V_A][:4].clone()})), AdapterInvalidError),
    ("no-weights-inside", edit_tensors(lambda t: t.clear()), AdapterInvalidError),
]


@pytest.mark.parametrize(("damage", "error"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_defect_has_its_own_error(adapter, damage, error):
    damage(adapter)
    with pytest.raises(AdapterInvalidError) as raised:
        read(adapter)
    assert type(raised.value) is error, raised.value
    assert raised.value.code == error.code


def test_pickle_only_adapter_says_pickle_is_never_read(adapter):
    (adapter / WEIGHTS).rename(adapter / "adapter_model.bin")
    with pytest.raises(AdapterMissingFileError, match="pickle files are never read"):
        read(adapter)


def test_rank_above_max_rank(adapter):
    with pytest.raises(AdapterRankTooLargeError, match="rank 8"):
        read(adapter, max_rank=4)
    assert read(adapter, max_rank=8).rank == 8


def test_adapter_built_for_another_base_mismatches(tmp_path):
    other = build_tiny_model(tmp_path / "other", hidden=32, heads=2, kv_heads=1)
    path = build_tiny_adapter(other, tmp_path / "foreign")
    with pytest.raises(AdapterBaseMismatchError, match="another base"):
        read(path)


def test_base_name_is_compared_when_both_are_known(adapter, tiny_model_dir):
    name = tiny_model_dir.name  # build_tiny_adapter records the model's local path
    assert read(adapter, base_name=name.upper()).rank == 8
    assert read(adapter, base_name=f"some-org/{name}").rank == 8
    with pytest.raises(AdapterBaseMismatchError, match="trained for"):
        read(adapter, base_name="meta-llama/Llama-3.1-8B")
    edit_config(base_model_name_or_path=None)(adapter)
    assert read(adapter, base_name="meta-llama/Llama-3.1-8B").rank == 8


@pytest.mark.parametrize(
    ("adapter_base", "served", "same"),
    [
        ("meta-llama/Llama-3.1-8B", "/models/llama-3.1-8b/", True),
        ("C:\\models\\Mistral-7B", "mistralai/mistral-7b", True),
        ("meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-70B", False),
        ("Qwen/Qwen2-0.5B", "Qwen2-0.5B-Instruct", False),
    ],
)
def test_base_names_match(adapter_base, served, same):
    assert base_names_match(adapter_base, served) is same


def test_mixed_ranks_are_zero_padded_and_cast(adapter):
    """v_proj at rank 4 (rank_pattern) in a rank-8 adapter: padded rows are zero, the delta unchanged."""
    raw = load_file(str(adapter / WEIGHTS))
    edit_tensors(lambda t: t.update({V_A: t[V_A][:4].clone(), V_B: t[V_B][:, :4].clone()}))(adapter)
    edit_config(rank_pattern={"v_proj": 4})(adapter)
    for dtype in (torch.float32, torch.bfloat16):
        weights = read(adapter, dtype=dtype).weights[(1, "v_proj")]
        assert weights.a.dtype == weights.b_t.dtype == dtype
        assert weights.a.shape == (8, 64) and weights.b_t.shape == (8, 32)
        assert not weights.a[4:].any() and not weights.b_t[4:].any()
        expected = raw[V_B][:, :4] @ raw[V_A][:4] * (16 / 4)  # [out, in]
        delta = (weights.a.float().t() @ weights.b_t.float()).t()
        torch.testing.assert_close(delta, expected, rtol=2e-2, atol=2e-2)
