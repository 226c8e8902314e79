"""What is not served is refused clearly: architectures at start-up, adapter features by name."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from gpu_engine.adapters import read_adapter
from gpu_engine.config import EngineConfig
from gpu_engine.engine import Engine
from gpu_engine.errors import AdapterUnsupportedError, UnsupportedModelError
from gpu_engine.families import SUPPORTED_ARCHITECTURES
from gpu_engine.model_loader import load_base_model
from gpu_engine.tiny import build_tiny_adapter, build_tiny_model


def test_unsupported_model_type_fails_at_start_up_listing_the_served_ones(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=512)).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError) as info:
        Engine(EngineConfig(str(tmp_path)))
    message = str(info.value)
    assert "'gpt2' is not supported" in message
    for arch in SUPPORTED_ARCHITECTURES:
        assert arch in message
    assert {"gemma", "gemma2", "gemma3_text", "phi", "phi3", "qwen3"} <= set(SUPPORTED_ARCHITECTURES)


@pytest.fixture(scope="module")
def phi3_dir(tmp_path_factory, tiny_tokenizer_dir):
    return build_tiny_model(tmp_path_factory.mktemp("phi3"), arch="phi3", tokenizer_dir=tiny_tokenizer_dir, layers=1)


@pytest.fixture(scope="module")
def phi3_spec(phi3_dir):
    return load_base_model(EngineConfig(str(phi3_dir), device="cpu")).spec


def test_fused_family_spec_names_the_fused_projections(phi3_spec):
    assert phi3_spec.projections == ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
    q_out, kv_out = phi3_spec.num_heads * phi3_spec.head_dim, phi3_spec.num_kv_heads * phi3_spec.head_dim
    assert phi3_spec.projection_shape("qkv_proj") == (phi3_spec.hidden_size, q_out + 2 * kv_out)
    assert phi3_spec.projection_shape("gate_up_proj") == (phi3_spec.hidden_size, 2 * phi3_spec.intermediate_size)


@pytest.mark.parametrize(
    ("module", "fused"), [("q_proj", "qkv_proj"), ("v_proj", "qkv_proj"), ("up_proj", "gate_up_proj")]
)
def test_adapter_naming_an_unfused_module_of_a_fused_model_is_refused(tmp_path, phi3_dir, phi3_spec, module, fused):
    real = build_tiny_adapter(phi3_dir, tmp_path / "real", r=4, target_modules=[fused])
    block = "self_attn" if fused == "qkv_proj" else "mlp"
    in_f = phi3_spec.hidden_size
    out_f = phi3_spec.projection_shape(fused)[1] // (3 if fused == "qkv_proj" else 2)
    prefix = f"base_model.model.model.layers.0.{block}.{module}"
    forged = tmp_path / "forged"
    forged.mkdir()
    (forged / "adapter_config.json").write_text((real / "adapter_config.json").read_text())
    save_file({f"{prefix}.lora_A.weight": torch.randn(4, in_f), f"{prefix}.lora_B.weight": torch.randn(out_f, 4)},
              str(forged / "adapter_model.safetensors"))
    with pytest.raises(AdapterUnsupportedError) as info:
        read_adapter(forged, "forged", phi3_spec, torch.float32, max_rank=64)
    assert info.value.code == "adapter_unsupported"
    assert f"fuses it into {fused}" in str(info.value) and module in str(info.value)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (dict(use_dora=True), "use_dora"),
        (dict(modules_to_save=["lm_head"]), "modules_to_save"),
        (dict(target_modules=["embed_tokens", "q_proj"]), "embedding LoRA"),
    ],
    ids=["dora", "modules-to-save", "embedding"],
)
def test_unserved_adapter_features_are_refused_by_name(tmp_path, tiny_model_dir, options, named):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, **{"target_modules": ["q_proj"], **options})
    get_peft_model(base, config).save_pretrained(str(tmp_path / "a"), safe_serialization=True)
    if named == "embedding LoRA":  # PEFT records embed_tokens as a target; the tensors are what is refused
        assert "embed_tokens" in json.loads((tmp_path / "a" / "adapter_config.json").read_text())["target_modules"]
    spec = load_base_model(EngineConfig(str(tiny_model_dir), device="cpu")).spec
    with pytest.raises(AdapterUnsupportedError) as info:
        read_adapter(tmp_path / "a", "a", spec, torch.float32, max_rank=64)
    assert info.value.code == "adapter_unsupported"
    assert named in str(info.value)


def test_a_rope_type_whose_tables_change_with_length_is_refused(tmp_path, tiny_tokenizer_dir):
    options = {"rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}}
    model_dir = build_tiny_model(tmp_path, tokenizer_dir=tiny_tokenizer_dir, layers=1, config_options=options)
    with pytest.raises(UnsupportedModelError, match="rope_type 'dynamic' is not supported"):
        load_base_model(EngineConfig(str(model_dir), device="cpu"))
