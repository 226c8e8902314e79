"""Fused projections (Phi-3's qkv_proj, gate_up_proj) through every segmented LoRA backend.

The delta of a fused module is one LoRA over the fused output width; each backend (loop, grouped,
Triton — under Triton's interpreter without a GPU) must add it to the right rows and columns.
"""

from __future__ import annotations

import pytest
import torch

from gpu_engine.adapters import LoraAdapter, LoraWeights
from gpu_engine.lora_bank import LoraBank
from gpu_engine.lora_ops import LoraStep, has_grouped_mm, lora_delta_reference
from gpu_engine.model_spec import ModelSpec
from gpu_engine.segments import find_segments, segment_sort_key
from tests.engine.test_engine_lora_ops import LAYOUTS
from tests.engine.test_engine_triton import HAS_TRITON, KERNEL_DEVICE

FUSED_SPEC = ModelSpec(
    arch="phi3", num_layers=2, hidden_size=32, intermediate_size=40, num_heads=4, num_kv_heads=2, head_dim=8,
    vocab_size=64, max_position_embeddings=128, sliding_windows=(None, None), eos_token_ids=(2,),
    attention_projections=("qkv_proj", "o_proj"), mlp_projections=("gate_up_proj", "down_proj"),
)
ADAPTERS = [(4, ("qkv_proj",)), (8, ("qkv_proj", "gate_up_proj")), (4, ("gate_up_proj", "o_proj")),
            (16, ("qkv_proj", "down_proj")), (8, ("o_proj",)), (4, ("qkv_proj", "gate_up_proj"))]
BACKENDS = ["loop"] + (["grouped"] if has_grouped_mm() else []) + (
    ["triton"] if HAS_TRITON and KERNEL_DEVICE is not None else []
)


def test_fused_shapes_are_their_parts_side_by_side():
    assert FUSED_SPEC.projection_shape("qkv_proj") == (32, 4 * 8 + 2 * 2 * 8)
    assert FUSED_SPEC.projection_shape("gate_up_proj") == (32, 2 * 40)
    assert FUSED_SPEC.block_of("gate_up_proj") == "mlp" and FUSED_SPEC.block_of("qkv_proj") == "self_attn"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("proj", ["qkv_proj", "gate_up_proj", "o_proj"])
def test_fused_projection_deltas_match_reference(backend, layout, proj):
    device = torch.device(KERNEL_DEVICE if backend == "triton" else "cpu")
    generator = torch.Generator().manual_seed(0)
    adapters = []
    for i, (rank, targets) in enumerate(ADAPTERS):
        weights = {}
        for layer in range(FUSED_SPEC.num_layers):
            for target in targets:
                in_f, out_f = FUSED_SPEC.projection_shape(target)
                weights[(layer, target)] = LoraWeights(torch.randn(rank, in_f, generator=generator),
                                                       torch.randn(rank, out_f, generator=generator))
        adapters.append(LoraAdapter(f"a{i}", rank, weights))
    bank = LoraBank(FUSED_SPEC, torch.float32, device)
    keys = [bank.add(a) for a in adapters]
    sequences = sorted(LAYOUTS[layout], key=lambda s: segment_sort_key(None if s[0] is None else keys[s[0]]))
    row_adapters = [a for a, n in sequences for _ in range(n)]
    in_f, out_f = FUSED_SPEC.projection_shape(proj)
    x = torch.randn(len(row_adapters), in_f, generator=generator)
    base = torch.randn(len(row_adapters), out_f, generator=generator)
    segments = find_segments([None if a is None else keys[a] for a, _ in sequences], [n for _, n in sequences])
    y = base.clone().to(device)
    LoraStep(bank, segments, backend).apply(y, x.to(device), 1, proj)
    row_weights = [None if a is None else adapters[a].weights.get((1, proj)) for a in row_adapters]
    expected = base + lora_delta_reference(x, row_weights, out_f)
    torch.testing.assert_close(y.cpu(), expected, rtol=1e-5, atol=1e-4)
