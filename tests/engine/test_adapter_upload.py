"""Adapter uploads through one staging buffer, and what it pins: the CPU side of the CUDA path."""

from __future__ import annotations

import pytest
import torch

from gpu_engine.adapter_upload import AdapterUpload
from gpu_engine.cache_stats import CacheStats
from gpu_engine.device_cache import DeviceCache
from gpu_engine.lora_bank import LoraBank
from gpu_engine.pinned_staging import PinnedStaging, pinned_size
from tests.engine.test_lora_bank import ATTN, MLP, adapter
from tests.engine.test_adapter_cache import SPEC


@pytest.mark.parametrize(
    ("num_bytes", "expected"),
    [(0, 1024), (1, 1024), (1024, 1024), (1025, 2048), (3 << 20, 4 << 20), ((1 << 30) + 1, 1 << 31)],
)
def test_pinned_size_is_what_the_pinned_allocator_hands_out(num_bytes, expected):
    assert pinned_size(num_bytes) == expected


def test_staging_is_one_buffer_reused_and_grown_to_a_power_of_two():
    staging = PinnedStaging(torch.device("cpu"), torch.float32)
    first = staging.host(300)
    assert first.numel() == 300 and staging.to_device(300).data_ptr() == first.data_ptr()  # no copy on a CPU
    assert staging.host(100).data_ptr() == first.data_ptr()  # reused, not reallocated
    grown = staging.host(1000)
    assert grown.numel() == 1000 and staging.host(1).untyped_storage().nbytes() == pinned_size(4000)
    assert staging.pinned_bytes == 0  # nothing is page-locked off CUDA


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_an_upload_writes_every_tensor_of_the_slot_through_the_staging_buffer(dtype):
    """A heavy adapter (q/v + MLP in every layer): all of it packed once, scattered into its slot's rows."""
    bank = LoraBank(SPEC, dtype, torch.device("cpu"))
    bank.add(adapter("first", 8, ATTN))
    heavy = adapter("heavy", 8, ATTN + MLP)
    rank, slot = bank.add(heavy)
    bucket = bank.buckets[rank]
    for key, weights in heavy.weights.items():
        assert torch.equal(bucket.a[key][slot], weights.a.to(dtype))
        assert torch.equal(bucket.b[key][slot], weights.b_t.to(dtype))
    assert not bucket.a[(0, "gate_proj")][0].any()  # the first adapter's slot gained zeros, not weights
    total = sum(w.a.numel() + w.b_t.numel() for w in heavy.weights.values())
    element = bucket.a[(0, "q_proj")].element_size()
    assert bank.upload._staging.host(0).untyped_storage().nbytes() == pinned_size(total * element)


def test_upload_refuses_mismatched_lists():
    with pytest.raises(ValueError):
        AdapterUpload(torch.device("cpu"), torch.float32).write([torch.zeros(2)], [])


def test_each_device_load_is_counted_once_when_it_completes():
    stats = CacheStats()
    device = DeviceCache(LoraBank(SPEC, torch.float32, torch.device("cpu")), None, stats)
    for name in "abc":
        device.insert((name, 0), adapter(name, 4))
    device.report_loads()  # nothing left to report: on a CPU an upload is done when insert returns
    snap = stats.snapshot()["device"]
    assert snap.loads == 3 and len(snap.load_seconds) == 3 and all(s > 0 for s in snap.load_seconds)
    assert device.pinned_host_bytes == 0

