"""Adapter files: path safety, validation errors, scale folding."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from gpu_engine.adapters import load_adapter, resolve_adapter_dir
from gpu_engine.errors import AdapterInvalidError, AdapterNotFoundError
from gpu_engine.model_spec import ModelSpec
from gpu_engine.tiny import build_tiny_adapter, build_tiny_model

SPEC = ModelSpec(
    arch="llama", num_layers=2, hidden_size=64, intermediate_size=128, num_heads=4, num_kv_heads=2, head_dim=16,
    vocab_size=512, max_position_embeddings=1024, sliding_windows=(None, None), eos_token_ids=(2,),
)
WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"


def load(root, adapter_id):
    return load_adapter(root, adapter_id, SPEC, torch.float32, max_rank=64)


@pytest.fixture
def root(tmp_path, adapter_root):
    """A private copy of two built adapters, free to be damaged by each test."""
    for name in ("r8-qv", "r8-attn"):
        shutil.copytree(adapter_root / name, tmp_path / name)
    return tmp_path


@pytest.mark.parametrize(
    "adapter_id", ["", "..", "../x", "/abs", "a/../../b", "a//b", "./a", "bad\\name", "x" * 129, "nul\0"]
)
def test_ids_that_could_leave_the_root_are_not_found(root, adapter_id):
    with pytest.raises(AdapterNotFoundError):
        resolve_adapter_dir(root, adapter_id)


def test_symlink_out_of_the_root_is_not_found(root, tmp_path_factory, adapter_root):
    outside = tmp_path_factory.mktemp("outside")
    shutil.copytree(adapter_root / "r8-qv", outside / "evil")
    (root / "link").symlink_to(outside / "evil")
    with pytest.raises(AdapterNotFoundError):
        resolve_adapter_dir(root, "link")


def test_missing_root_or_adapter_is_not_found(root):
    with pytest.raises(AdapterNotFoundError):
        load(None, "r8-qv")
    with pytest.raises(AdapterNotFoundError):
        load(root, "nope")


def damage_truncate(path):
    data = (path / WEIGHTS).read_bytes()
    (path / WEIGHTS).write_bytes(data[: len(data) // 2])


def damage_pickle_only(path):
    (path / WEIGHTS).rename(path / "adapter_model.bin")


def damage_config(key, value):
    def damage(path):
        config = json.loads((path / CONFIG).read_text())
        config[key] = value
        (path / CONFIG).write_text(json.dumps(config))

    return damage


def damage_tensors(edit):
    def damage(path):
        tensors = load_file(str(path / WEIGHTS))
        edit(tensors)
        save_file(tensors, str(path / WEIGHTS))

    return damage


def _drop_one_b(tensors):
    del tensors[next(k for k in tensors if "lora_B" in k)]


def _rename_first(new_key):
    def edit(tensors):
        key = next(iter(tensors))
        tensors[new_key] = tensors.pop(key)

    return edit


def _transpose_all(tensors):
    for key in list(tensors):
        tensors[key] = tensors[key].t().contiguous()


def _nan(tensors):
    key = next(iter(tensors))
    tensors[key] = torch.full_like(tensors[key], float("nan"))


@pytest.mark.parametrize(
    "damage",
    [
        damage_truncate,
        damage_pickle_only,
        lambda p: (p / CONFIG).write_text("{not json"),
        damage_config("peft_type", "IA3"),
        damage_config("use_dora", True),
        damage_config("modules_to_save", ["lm_head"]),
        damage_config("r", "eight"),
        damage_tensors(_drop_one_b),
        damage_tensors(_rename_first("base_model.model.model.layers.0.self_attn.rotary.lora_A.weight")),
        damage_tensors(_rename_first("base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight")),
        damage_tensors(_rename_first("base_model.model.lm_head.lora_A.weight")),
        damage_tensors(_transpose_all),
        damage_tensors(_nan),
        damage_tensors(lambda t: t.clear()),
    ],
    ids=["truncated", "pickle-only", "bad-json", "not-lora", "dora", "modules-to-save", "bad-r", "missing-B",
         "unknown-module", "layer-out-of-range", "lm-head", "wrong-shapes", "nan", "no-weights"],
)
def test_damaged_adapters_are_invalid(root, damage):
    damage(root / "r8-qv")
    with pytest.raises(AdapterInvalidError):
        load(root, "r8-qv")


def test_adapter_for_another_base_is_invalid(tmp_path, tiny_tokenizer_dir):
    other = build_tiny_model(tmp_path / "other", hidden=32, heads=2, kv_heads=1, tokenizer_dir=tiny_tokenizer_dir)
    build_tiny_adapter(other, tmp_path / "adapters" / "foreign")
    with pytest.raises(AdapterInvalidError, match="another base"):
        load(tmp_path / "adapters", "foreign")


def test_rank_above_limit_is_invalid(root):
    with pytest.raises(AdapterInvalidError):
        load_adapter(root, "r8-qv", SPEC, torch.float32, max_rank=4)


@pytest.mark.parametrize(("name", "scale"), [("r8-qv", 16 / 8), ("r8-attn", 8 / math.sqrt(8))])
def test_scale_is_folded_into_b(root, name, scale):
    adapter = load(root, name)
    raw = load_file(str(root / name / WEIGHTS))
    prefix = "base_model.model.model.layers.1.self_attn.q_proj"
    expected = raw[f"{prefix}.lora_B.weight"] @ raw[f"{prefix}.lora_A.weight"] * scale  # [out, in]
    weights = adapter.weights[(1, "q_proj")]
    torch.testing.assert_close((weights.a.t() @ weights.b_t).t(), expected)
    assert adapter.rank == 8 and adapter.num_bytes > 0


def test_alpha_pattern_overrides_alpha_per_module(root):
    damage_config("alpha_pattern", {"v_proj": 64})(root / "r8-qv")
    adapter = load(root, "r8-qv")
    raw = load_file(str(root / "r8-qv" / WEIGHTS))
    b = raw["base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"]
    torch.testing.assert_close(adapter.weights[(0, "v_proj")].b_t, (b * 64 / 8).t())
