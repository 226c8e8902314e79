"""Triton SGMV kernels against the PyTorch reference: on CUDA, and on CPU under Triton's interpreter.

On a machine without an NVIDIA device, tests/conftest.py turns on TRITON_INTERPRET before anything
imports Triton (it decides at decoration time), so the same kernel code runs here, in-process.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from gpu_engine.config import EngineConfig
from gpu_engine.engine import Engine
from gpu_engine.lora_bank import LoraBank
from gpu_engine.lora_ops import LoraStep, lora_delta_reference
from gpu_engine.segments import find_segments, segment_sort_key
from tests.engine.engine_helpers import ORACLE_ADAPTERS, peft_model
from tests.engine.test_engine_logits import check_logits
from tests.engine.test_engine_lora_ops import ADAPTERS, LAYOUTS, SPEC, make_adapter

HAS_CUDA = torch.cuda.is_available()
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
HAS_TRITON = importlib.util.find_spec("triton") is not None
KERNEL_DEVICE = "cuda" if HAS_CUDA else ("cpu" if INTERPRET else None)
DTYPES = [torch.float32] + ([torch.bfloat16, torch.float16] if HAS_CUDA else [])
TOLERANCE = {torch.float32: (1e-5, 1e-4), torch.bfloat16: (2e-2, 2e-1), torch.float16: (1e-2, 5e-2)}


@pytest.mark.skipif(not HAS_TRITON or KERNEL_DEVICE is None,
                    reason="needs triton, and CUDA or TRITON_INTERPRET=1 (set by tests/conftest.py without a GPU)")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("proj", ["q_proj", "k_proj", "down_proj"])
def test_triton_matches_reference(dtype, layout, proj):
    device = torch.device(KERNEL_DEVICE)
    generator = torch.Generator().manual_seed(0)
    adapters = [make_adapter(i, r, t, generator) for i, (r, t) in enumerate(ADAPTERS)]
    bank = LoraBank(SPEC, dtype, device)
    keys = [bank.add(a) for a in adapters]
    sequences = sorted(LAYOUTS[layout], key=lambda s: segment_sort_key(None if s[0] is None else keys[s[0]]))
    row_adapters = [a for a, n in sequences for _ in range(n)]
    in_f, out_f = SPEC.projection_shape(proj)
    x = torch.randn(len(row_adapters), in_f, generator=generator).to(device, dtype)
    base = torch.randn(len(row_adapters), out_f, generator=generator).to(device, dtype)
    segments = find_segments([None if a is None else keys[a] for a, _ in sequences], [n for _, n in sequences])
    y = base.clone()
    LoraStep(bank, segments, "triton").apply(y, x, 1, proj)
    row_weights = [None if a is None else adapters[a].weights.get((1, proj)) for a in row_adapters]
    expected = base.float().cpu() + lora_delta_reference(x.float().cpu(), row_weights, out_f)
    rtol, atol = TOLERANCE[dtype]
    magnitude = expected.abs().max().item() if expected.numel() else 1.0
    torch.testing.assert_close(y.float().cpu(), expected, rtol=rtol, atol=atol * max(1.0, magnitude))


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_engine_on_cuda_with_triton_matches_peft(tiny_model_dir, adapter_root):
    names = [a[0] for a in ORACLE_ADAPTERS]
    engine = Engine(EngineConfig(str(tiny_model_dir), str(adapter_root), device="cuda", max_batch_size=40))
    assert engine.lora_backend == "triton"
    check_logits(engine, peft_model(tiny_model_dir, adapter_root, names), names, atol=1e-3)
