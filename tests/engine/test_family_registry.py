"""The family table and the shared layer pieces, checked against transformers' own classes."""

from __future__ import annotations

import pytest
import torch

from gpu_engine.families import FAMILIES, Family
from gpu_engine.families.layers import apply_rotary, make_norm, soft_cap
from gpu_engine.families.registry import unfused_parts
from gpu_engine.tiny import _model_config

TINY = dict(hidden=32, intermediate=48, layers=2, heads=4, kv_heads=2, max_position_embeddings=64, init_std=0.2,
            sliding_window=None, tie_word_embeddings=False, config_options={})
# config options that switch on a family's optional modules, so that their names are checked too
OPTIONAL_MODULES = {"phi": dict(qk_layernorm=True)}


@pytest.mark.parametrize("arch", FAMILIES)
def test_every_module_a_family_names_exists_in_the_hf_model(arch):
    from transformers import AutoModelForCausalLM

    config = _model_config(arch, 128, {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}, **TINY)
    for key, value in OPTIONAL_MODULES.get(arch, {}).items():
        setattr(config, key, value)
    model = AutoModelForCausalLM.from_config(config)
    family = FAMILIES[arch]
    assert model.config.model_type == family.model_type
    layer = model.model.layers[0]
    for name in family.attention_projections:
        assert isinstance(getattr(layer.self_attn, name), torch.nn.Linear), name
    for name in family.mlp_projections:
        assert isinstance(getattr(layer.mlp, name), torch.nn.Linear), name
    for name in (family.input_norm, family.attn_out_norm, family.pre_mlp_norm, family.mlp_out_norm):
        if name is not None:
            assert isinstance(getattr(layer, name), torch.nn.Module), name
    for name in family.qk_norms or ():
        assert isinstance(getattr(layer.self_attn, name), torch.nn.Module), name
    assert isinstance(getattr(model.model, family.final_norm), torch.nn.Module)
    assert getattr(model.config, family.activation_key) is not None


@pytest.mark.parametrize(
    ("names", "parts"),
    [
        (("q_proj", "k_proj", "v_proj"), ("q_proj", "k_proj", "v_proj")),
        (("qkv_proj",), ("q_proj", "k_proj", "v_proj")),
        (("gate_up_proj",), ("gate_proj", "up_proj")),
        (("fc1",), ("fc1",)),
    ],
)
def test_unfused_parts(names, parts):
    assert unfused_parts(names) == parts


@pytest.mark.parametrize(("arch", "gated"), [("llama", True), ("phi3", True), ("phi", False), ("gemma2", True)])
def test_gated_mlp(arch, gated):
    assert FAMILIES[arch].gated_mlp is gated


@pytest.mark.parametrize(
    "bad", [dict(block="serial"), dict(norm="batch"), dict(attention_projections=("qkv_proj",))]
)
def test_family_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        Family("x", "nothing", **bad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    ("kind", "module_path"),
    [
        ("rms", "transformers.models.llama.modeling_llama.LlamaRMSNorm"),
        ("rms_offset", "transformers.models.gemma.modeling_gemma.GemmaRMSNorm"),
        ("rms_offset", "transformers.models.gemma2.modeling_gemma2.Gemma2RMSNorm"),
        ("layer", "torch.nn.LayerNorm"),
    ],
)
def test_norms_equal_the_hf_modules_bit_for_bit(kind, module_path, dtype):
    import importlib

    module_name, cls_name = module_path.rsplit(".", 1)
    module = getattr(importlib.import_module(module_name), cls_name)(16, eps=1e-5).to(dtype)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn_like(param))
    x = torch.randn(5, 16).to(dtype)
    with torch.no_grad():
        assert torch.equal(make_norm(kind, module)(x), module(x))


def test_no_module_is_the_identity():
    x = torch.randn(3, 4)
    assert make_norm("rms", None)(x) is x


@pytest.mark.parametrize("rotary_dim", [16, 8, 12])
def test_partial_rotary_equals_hf(rotary_dim):
    from transformers.models.phi3.modeling_phi3 import apply_rotary_pos_emb

    q, k = torch.randn(5, 4, 16), torch.randn(5, 2, 16)  # [T, heads, D]
    cos, sin = torch.randn(5, rotary_dim), torch.randn(5, rotary_dim)
    # HF: [B, heads, T, D] with cos/sin [B, T, R]
    q_ref, k_ref = apply_rotary_pos_emb(q.transpose(0, 1)[None], k.transpose(0, 1)[None], cos[None], sin[None])
    torch.testing.assert_close(apply_rotary(q, cos, sin), q_ref[0].transpose(0, 1), rtol=0, atol=0)
    torch.testing.assert_close(apply_rotary(k, cos, sin), k_ref[0].transpose(0, 1), rtol=0, atol=0)


@pytest.mark.parametrize(("value", "cap", "expected"), [(0.0, 5.0, 0.0), (1e9, 5.0, 5.0), (-1e9, 2.0, -2.0),
                                                        (3.0, None, 3.0)])
def test_soft_cap(value, cap, expected):
    assert soft_cap(torch.tensor(value), cap).item() == pytest.approx(expected)
