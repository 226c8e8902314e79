"""Triton SGMV kernels against the PyTorch reference: on CUDA, and on CPU under Triton's interpreter.

On a machine without an NVIDIA device, tests/conftest.py turns on TRITON_INTERPRET before anything
imports Triton (it decides at decoration time), so the same kernel code runs here, in-process.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os

import pytest
import torch

from gpu_engine.adapters import LoraAdapter, LoraWeights
from gpu_engine.config import EngineConfig
from gpu_engine.engine import Engine
from gpu_engine.lora_bank import LoraBank
from gpu_engine.lora_ops import LoraStep
from gpu_engine.segments import Segment, find_segments, segment_sort_key
from tests.engine.engine_helpers import ORACLE_ADAPTERS, peft_model
from tests.engine.test_engine_logits import check_logits
from tests.engine.test_engine_lora_ops import ADAPTERS, LAYOUTS, SPEC, make_adapter

HAS_CUDA = torch.cuda.is_available()
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
HAS_TRITON = importlib.util.find_spec("triton") is not None
KERNEL_DEVICE = "cuda" if HAS_CUDA else ("cpu" if INTERPRET else None)
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
needs_kernels = pytest.mark.skipif(
    not HAS_TRITON or KERNEL_DEVICE is None,
    reason="needs triton, and CUDA or TRITON_INTERPRET=1 (set by tests/conftest.py without a GPU)",
)


def rounding_bound(
    x: torch.Tensor, row_weights, base: torch.Tensor, out_features: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """(reference, bound): the exact result from the inputs as the kernel sees them (rounded to
    `dtype`), in float64, and an elementwise bound on the kernel's error derived from rounding.

    The kernel accumulates in fp32 (reduction length in + r), rounds v to `dtype` before the expand
    (u |v| |B|) and rounds y once at the end (u |y|); u is `dtype`'s unit roundoff (eps / 2).
    Twice that bound: tight enough that a row served by another adapter's slot is caught.
    """
    u = torch.finfo(dtype).eps / 2
    u32 = torch.finfo(torch.float32).eps / 2
    x64 = x.double().cpu()
    reference = base.double().cpu().clone()
    bound = torch.zeros_like(reference)
    for t, weights in enumerate(row_weights):
        if weights is None:
            continue
        a = weights.a.to(dtype).double()  # [r, in]
        b = weights.b_t.to(dtype).double()  # [r, out]
        v = x64[t] @ a.t()  # [r]
        abs_v = x64[t].abs() @ a.abs().t()
        reference[t] += v @ b
        reduction = x64.shape[1] + a.shape[0] + 2
        bound[t] = u * (v.abs() @ b.abs()) + reduction * u32 * (abs_v @ b.abs())
    bound += u * reference.abs()
    return reference, 2 * bound


def assert_within(actual: torch.Tensor, reference: torch.Tensor, bound: torch.Tensor) -> None:
    error = (actual.double().cpu() - reference).abs()
    if error.numel() == 0:
        return
    worst = (error - bound).argmax()
    assert bool((error <= bound).all()), (
        f"{int((error > bound).sum())} elements over the rounding bound; worst at {divmod(int(worst), error.shape[1])}:"
        f" error {error.flatten()[worst]:.3g} > bound {bound.flatten()[worst]:.3g}"
    )


def run_triton(layout, proj, dtype, *, plant_wrong_slot=False, b_scale=1.0, static_shape=False, num_rows=None):
    """Run the kernels on one layout; returns (y, reference, bound, base)."""
    device = torch.device(KERNEL_DEVICE)
    generator = torch.Generator().manual_seed(0)
    adapters = [make_adapter(i, r, t, generator) for i, (r, t) in enumerate(ADAPTERS)]
    for adapter in adapters:
        for w in adapter.weights.values():
            w.b_t.mul_(b_scale)
    bank = LoraBank(SPEC, dtype, device)
    keys = [bank.add(a) for a in adapters]
    sequences = sorted(LAYOUTS[layout], key=lambda s: segment_sort_key(None if s[0] is None else keys[s[0]]))
    row_adapters = [a for a, n in sequences for _ in range(n)]
    in_f, out_f = SPEC.projection_shape(proj)
    x = torch.randn(len(row_adapters), in_f, generator=generator).to(device, dtype)
    base = torch.randn(len(row_adapters), out_f, generator=generator).to(device, dtype)
    segments = find_segments([None if a is None else keys[a] for a, _ in sequences], [n for _, n in sequences])
    if plant_wrong_slot:  # the first segment reads its bucket's other slot that targets `proj`
        first = segments[0]
        other = next(k[1] for i, k in enumerate(keys)
                     if k[0] == first.rank and k[1] != first.slot and (1, proj) in adapters[i].weights)
        segments[0] = Segment(first.rank, other, first.start, first.end)
    y = base.clone()
    LoraStep(bank, segments, "triton", static_shape=static_shape, num_rows=num_rows).apply(y, x, 1, proj)
    row_weights = [None if a is None else adapters[a].weights.get((1, proj)) for a in row_adapters]
    reference, bound = rounding_bound(x, row_weights, base, out_f, dtype)
    return y, reference, bound, base


@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("proj", ["q_proj", "k_proj", "down_proj"])
def test_triton_matches_reference(dtype, layout, proj):
    y, reference, bound, base = run_triton(layout, proj, dtype)
    assert_within(y, reference, bound)


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_triton_wrong_slot_is_caught(dtype):
    """A planted wrong-slot bug, with LoRA deltas small beside the base output (as real ones are):
    the rounding bound catches it; the old tolerance (0.2 × the largest value) let it pass."""
    y, reference, bound, _ = run_triton("one-row-sparse-slots", "q_proj", dtype, plant_wrong_slot=True, b_scale=0.01)
    with pytest.raises(AssertionError, match="over the rounding bound"):
        assert_within(y, reference, bound)
    torch.testing.assert_close(  # the check this test replaced: blind to the bug
        y.float().cpu(), reference.float(), rtol=2e-2, atol=2e-1 * reference.abs().max().item()
    )
    y, reference, bound, _ = run_triton("one-row-sparse-slots", "q_proj", dtype, b_scale=0.01)
    assert_within(y, reference, bound)  # and without the bug the same deltas pass


@needs_kernels
@pytest.mark.parametrize("layout", ["prefill-and-decode", "base-only", "empty"])
def test_triton_static_shape_launches_every_bucket(layout):
    """Padded rows and every rank bucket launched (empty ones exit at once): the same result."""
    y, reference, bound, _ = run_triton(layout, "q_proj", torch.float32, static_shape=True, num_rows=64)
    assert_within(y, reference, bound)

@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_engine_on_cuda_with_triton_matches_peft(tiny_model_dir, adapter_root):
    names = [a[0] for a in ORACLE_ADAPTERS]
    engine = Engine(EngineConfig(str(tiny_model_dir), str(adapter_root), device="cuda", max_batch_size=40))
    assert engine.lora_backend == "triton"
    check_logits(engine, peft_model(tiny_model_dir, adapter_root, names), names, atol=1e-3)


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("static_shape", "expected_split"), [(False, 4), (True, 2)])
def test_triton_split_k_shrink(dtype, static_shape, expected_split):
    """A decode-sized step splits the shrink's reduction (in_features 320: five BLOCK_K tiles, the
    last one partial) over several programs; the fp32 partials sum to the unsplit result."""
    spec = dataclasses.replace(SPEC, hidden_size=320, num_heads=4, head_dim=80)
    device = torch.device(KERNEL_DEVICE)
    generator = torch.Generator().manual_seed(5)
    in_f, out_f = spec.projection_shape("q_proj")
    adapters = [
        LoraAdapter(f"s{i}", 8, {(0, "q_proj"): LoraWeights(torch.randn(8, in_f, generator=generator),
                                                             torch.randn(8, out_f, generator=generator))})
        for i in range(3)
    ]
    bank = LoraBank(spec, dtype, device)
    keys = [bank.add(a) for a in adapters]
    segments = find_segments(keys, [1, 2, 1])
    x = torch.randn(4, in_f, generator=generator).to(device, dtype)
    base = torch.randn(4, out_f, generator=generator).to(device, dtype)
    y = base.clone()
    LoraStep(bank, segments, "triton", num_rows=16, static_shape=static_shape).apply(y, x, 0, "q_proj")
    # eager: 3 work items, a table of 4, on the interpreter's 8 stand-in SMs -> 4 splits (5 tiles);
    # static: a table of 16 (any layout of 16 rows) -> 2 splits
    (split_k,) = [launch[2] for key, launch in bank.kernel_buffers.launches.items() if key[1] == "q_proj"]
    assert split_k == expected_split
    rows = [adapters[i].weights[(0, "q_proj")] for i, n in enumerate([1, 2, 1]) for _ in range(n)]
    assert_within(y, *rounding_bound(x, rows, base, out_f, dtype))
