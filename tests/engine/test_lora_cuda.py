"""The CUDA side of adapter uploads and the Triton work-item table (run by bench/gpu_check.sh on a device).

On a CPU these skip; their CPU halves are test_adapter_upload.py, test_lora_work_items.py and
test_engine_triton.py (under Triton's interpreter).
"""

from __future__ import annotations

import pytest
import torch

from gpu_engine.lora_bank import LoraBank
from gpu_engine.lora_ops import LoraStep
from gpu_engine.pinned_staging import pinned_size
from gpu_engine.segments import find_segments
from tests.engine.test_adapter_cache import SPEC
from tests.engine.test_engine_triton import assert_within, rounding_bound
from tests.engine.test_lora_bank import ATTN, MLP, adapter

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


def test_upload_is_one_staged_copy_on_the_load_stream_and_the_compute_stream_waits_for_it():
    bank = LoraBank(SPEC, torch.bfloat16, CUDA)
    heavy = adapter("heavy", 16, ATTN + MLP)
    assert not any(w.a.is_pinned() for w in heavy.weights.values())  # the host tier's memory stays pageable
    torch.cuda.synchronize()
    rank, slot = bank.add(heavy)
    # read on the compute stream without a synchronize: ordered after the upload by its event
    got = torch.stack([bank.buckets[rank].a[key][slot].float().sum() for key in heavy.weights]).cpu()
    want = torch.stack([w.a.bfloat16().float().sum() for w in heavy.weights.values()])
    assert torch.equal(got, want)
    torch.cuda.synchronize()
    (seconds,) = bank.upload.finished()
    assert seconds > 0 and bank.upload.finished() == []  # counted once, when complete
    total = sum(w.a.numel() + w.b_t.numel() for w in heavy.weights.values()) * 2
    assert bank.upload.pinned_bytes == pinned_size(total)  # one staging buffer, not per-tensor pins


def test_static_shape_step_replays_in_a_cuda_graph_with_another_layout():
    """The table's device copy stays at one address: a captured step replays a different segment layout."""
    generator = torch.Generator().manual_seed(0)
    adapters = [adapter(f"g{i}", r, ("q_proj",)) for i, r in enumerate((8, 8, 16))]
    bank = LoraBank(SPEC, torch.bfloat16, CUDA)
    keys = [bank.add(a) for a in adapters]
    rows = 16
    in_f, out_f = SPEC.projection_shape("q_proj")
    x = torch.randn(rows, in_f, generator=generator).to(CUDA, torch.bfloat16)
    base = torch.randn(rows, out_f, generator=generator).to(CUDA, torch.bfloat16)
    y = base.clone()
    layout_a = find_segments([keys[0], keys[2]], [3, 1])
    step = LoraStep(bank, layout_a, "triton", num_rows=rows, static_shape=True)
    step.apply(y, x, 0, "q_proj")  # compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step.apply(y, x, 0, "q_proj")
    counts = [1, 5, 2]  # layout B: all three adapters, in rank order
    LoraStep(bank, find_segments(keys, counts), "triton", num_rows=rows, static_shape=True)  # rewrites the table
    y.copy_(base)
    graph.replay()
    row_weights = [adapters[i].weights[(0, "q_proj")] for i, n in enumerate(counts) for _ in range(n)]
    row_weights += [None] * (rows - sum(counts))
    assert_within(y, *rounding_bound(x, row_weights, base, out_f, torch.bfloat16))
