"""Every served family against PEFT over transformers' own modelling code: logits and greedy tokens.

Per family: a tiny random checkpoint (norm weights and biases random too), adapters of several
shapes (all-linear, attention-only, MLP-only with another rank, rsLoRA), served in mixed batches
with base rows through the loop and grouped backends.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

from gpu_engine.config import EngineConfig
from gpu_engine.engine import Engine
from gpu_engine.errors import UnsupportedModelError
from gpu_engine.families import FAMILIES
from gpu_engine.families.layers import identity
from gpu_engine.model_loader import load_base_model
from gpu_engine.tiny import build_tiny_adapter, build_tiny_model
from gpu_engine.types import FinishReason, GenerationRequest, SamplingParams
from tests.engine.engine_helpers import peft_greedy, peft_model, run_all
from tests.engine.test_engine_logits import PROMPTS, check_logits
from tests.engine.test_engine_triton import HAS_TRITON, KERNEL_DEVICE

NEW_FAMILIES = ("qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "phi")
# (arch, build_tiny_model options): every new family, plus the options some of their checkpoints use
VARIANTS = {
    **{arch: (arch, {}) for arch in NEW_FAMILIES},
    "gemma-tied": ("gemma", {"tie_word_embeddings": True}),  # as Gemma-2B/7B ship
    "phi-qk-layernorm": ("phi", {"config_options": {"qk_layernorm": True}}),
    "qwen3-sliding": ("qwen3", {"sliding_window": 4, "config_options": {"max_window_layers": 1}}),
    "phi3-longrope": ("phi3", {"max_position_embeddings": 256, "config_options": {  # as Phi-4-mini, Phi-3.5-mini
        "original_max_position_embeddings": 64,
        "rope_parameters": {"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
                            "short_factor": [1.0 + 0.1 * i for i in range(6)],
                            "long_factor": [2.0 + 0.3 * i for i in range(6)]}}}),
}
MAX_NEW = 12
# bitsandbytes' CPU 4-bit matmul rounds its fp32 input to bf16 (lin(x) == lin(x.bfloat16().float())), so an
# fp32 rounding difference between a batched and a lone row (~1e-7) can move an output by one bf16 step
# (~1e-2 at these magnitudes); tokens must still match exactly
NF4_CPU_ATOL = 0.1


def family_adapters(arch: str) -> dict[str, tuple[int, int, str | tuple[str, ...], bool]]:
    """name -> (rank, alpha, targets, rslora): the family's own module names, fused ones included."""
    family = FAMILIES[arch]
    return {
        "all-linear": (8, 16, "all-linear", False),
        "attn": (4, 8, family.attention_projections, False),
        "mlp": (16, 16, family.mlp_projections, True),
        "out": (6, 12, (family.attention_projections[-1], family.mlp_projections[-1]), False),
    }


@pytest.fixture(scope="module", params=VARIANTS)
def family_checkpoint(request, tmp_path_factory, tiny_tokenizer_dir):
    arch, options = VARIANTS[request.param]
    root = tmp_path_factory.mktemp(request.param)
    model_dir = build_tiny_model(root / "model", arch=arch, tokenizer_dir=tiny_tokenizer_dir, layers=3, **options)
    adapters = family_adapters(arch)
    for seed, (name, (rank, alpha, targets, rslora)) in enumerate(adapters.items(), start=1):
        build_tiny_adapter(model_dir, root / "adapters" / name, r=rank, alpha=alpha, target_modules=targets,
                           seed=seed, use_rslora=rslora)
    return arch, model_dir, root / "adapters", list(adapters)


def test_variants_have_what_they_claim(family_checkpoint, request):
    _, model_dir, _, _ = family_checkpoint
    model = load_base_model(EngineConfig(str(model_dir), device="cpu"))
    name = request.node.callspec.params["family_checkpoint"]
    assert model.spec.arch == VARIANTS[name][0]
    if name == "qwen3-sliding":
        assert model.spec.sliding_windows == (None, 4, 4)
    if name in ("gemma2", "gemma3_text"):
        assert model.spec.sliding_windows == (4, None, 4)
    if name in ("phi-qk-layernorm", "qwen3", "gemma3_text"):
        assert model.layers[0].q_norm is not identity and model.layers[0].k_norm is not identity
    if name == "gemma-tied":
        assert model.lm_head.data_ptr() == model.embed.data_ptr()
    if name == "phi3-longrope":  # served within the short factors' range only
        assert model.max_model_len == 64
        with pytest.raises(UnsupportedModelError, match="original_max_position_embeddings=64"):
            load_base_model(EngineConfig(str(model_dir), device="cpu", max_model_len=128))
    if name == "phi":
        assert model.lm_head_bias is not None and model.rope_tables["default"][0].shape[-1] == model.spec.head_dim // 2


@pytest.mark.parametrize("backend", ["loop", "grouped"])
def test_family_logits_match_peft_in_one_mixed_step(family_checkpoint, backend):
    arch, model_dir, adapter_root, names = family_checkpoint
    engine = Engine(EngineConfig(str(model_dir), str(adapter_root), max_batch_size=24, lora_backend=backend))
    assert engine.spec.arch == arch
    check_logits(engine, peft_model(model_dir, adapter_root, names), names)


@pytest.mark.skipif(not HAS_TRITON or KERNEL_DEVICE is None, reason="needs triton, and CUDA or TRITON_INTERPRET=1")
def test_fused_family_through_the_triton_kernels_matches_peft(tmp_path, tiny_tokenizer_dir):
    model_dir = build_tiny_model(tmp_path / "phi3", arch="phi3", tokenizer_dir=tiny_tokenizer_dir)
    names = ["all-linear", "attn"]
    for seed, name in enumerate(names, start=1):
        rank, alpha, targets, rslora = family_adapters("phi3")[name]
        build_tiny_adapter(model_dir, tmp_path / "adapters" / name, r=rank, alpha=alpha, target_modules=targets,
                           seed=seed, use_rslora=rslora)
    config = EngineConfig(str(model_dir), str(tmp_path / "adapters"), device=KERNEL_DEVICE, max_batch_size=12,
                          lora_backend="triton")
    check_logits(Engine(config), peft_model(model_dir, tmp_path / "adapters", names), names,
                 atol=1e-3 if KERNEL_DEVICE == "cuda" else 1e-4)


def test_family_greedy_tokens_match_peft_generate_in_mixed_batches(family_checkpoint):
    arch, model_dir, adapter_root, names = family_checkpoint
    engine = Engine(EngineConfig(str(model_dir), str(adapter_root), max_batch_size=24, max_step_tokens=64))
    oracle = peft_model(model_dir, adapter_root, names)
    requests = [
        GenerationRequest(f"{p}:{a}", prompt, a, SamplingParams(max_new_tokens=MAX_NEW))
        for p, prompt in enumerate(PROMPTS)
        for a in [None, *names]
    ]
    outcomes = run_all(engine, requests)
    for request in requests:
        expected = peft_greedy(oracle, engine.tokenizer, request.prompt, request.adapter_id, MAX_NEW)
        assert outcomes[request.request_id].token_ids == expected, f"{arch} {request.request_id}"
        reason = FinishReason.EOS if expected[-1] in engine.spec.eos_token_ids else FinishReason.LENGTH
        assert outcomes[request.request_id].final.finish_reason is reason
    # the adapters change the answers: the comparison above is not base against base
    for p in range(len(PROMPTS)):
        assert any(outcomes[f"{p}:{a}"].token_ids != outcomes[f"{p}:None"].token_ids for a in names)


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes is not installed")
def test_family_nf4_base_matches_peft_on_the_same_nf4_base(family_checkpoint):
    arch, model_dir, adapter_root, names = family_checkpoint
    served = names[:2]
    engine = Engine(EngineConfig(str(model_dir), str(adapter_root), quantize="nf4", device="cpu", max_batch_size=12))
    assert any(type(p).__name__ == "Linear4bit" for p in engine.model.layers[0].projections.values())
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(
        str(model_dir), quantization_config=quant, dtype=torch.float32, device_map={"": "cpu"}
    )
    oracle = PeftModel.from_pretrained(base, str(adapter_root / served[0]), adapter_name=served[0])
    oracle.load_adapter(str(adapter_root / served[1]), adapter_name=served[1])
    oracle.eval()
    check_logits(engine, oracle, served, atol=NF4_CPU_ATOL)
    requests = [GenerationRequest(f"{arch}:{a}", PROMPTS[0], a, SamplingParams(max_new_tokens=MAX_NEW))
                for a in (None, *served)]
    outcomes = run_all(engine, requests)
    for request in requests:
        expected = peft_greedy(oracle, engine.tokenizer, request.prompt, request.adapter_id, MAX_NEW)
        assert outcomes[request.request_id].token_ids == expected, request.request_id
