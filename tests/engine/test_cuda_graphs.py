"""Static-shape decode steps and their CUDA graphs: which steps are captured under which key (CPU),
and, on a device, graph replays giving the eager step's tokens (run by bench/gpu_check.sh)."""

from __future__ import annotations

import pytest
import torch

from gpu_engine.config import EngineConfig
from gpu_engine.cuda_graphs import bank_layout, can_capture, decode_shape_key
from gpu_engine.engine import Engine
from gpu_engine.segments import Segment
from gpu_engine.types import GenerationRequest, SamplingParams
from tests.engine.engine_helpers import ORACLE_ADAPTERS, peft_greedy, peft_model, run_all

HAS_CUDA = torch.cuda.is_available()
@pytest.mark.parametrize(
    ("segments", "backend", "expected"),
    [
        ([], "grouped", True),  # base-only decode: any backend
        ([Segment(8, 0, 0, 1)], "triton", True),  # triton LoRA launches have static shapes
        ([Segment(8, 0, 0, 1)], "grouped", False),  # grouped_mm offsets are built on the host
    ],
)
def test_which_decode_steps_are_captured(segments, backend, expected):
    assert can_capture(segments, backend) is expected


def test_the_graph_key_pads_rows_and_block_tables_to_buckets():
    assert decode_shape_key(2, 17, block_size=16, max_table_len=64) == (2, 2)
    assert decode_shape_key(3, 17, block_size=4, max_table_len=64) == (4, 8)  # position 17: 5 blocks -> 8
    assert decode_shape_key(3, 17, block_size=4, max_table_len=6) == (4, 6)


def test_graphs_are_off_on_the_cpu_and_refused_when_asked_for(tiny_model_dir):
    assert Engine(EngineConfig(str(tiny_model_dir), device="cpu", max_batch_size=2)).decode_graphs is None
    with pytest.raises(ValueError, match="CUDA"):
        EngineConfig(str(tiny_model_dir), device="cpu", cuda_graphs=True)


def test_bank_layout_changes_when_the_bank_grows(tiny_model_dir, adapter_root):
    engine = Engine(EngineConfig(str(tiny_model_dir), str(adapter_root), max_batch_size=2))
    empty = bank_layout(engine.bank)
    engine.load_adapter("r4-qv")
    one = bank_layout(engine.bank)
    engine.load_adapter("r16-all")
    assert len({empty, one, bank_layout(engine.bank)}) == 3


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_graph_decode_on_cuda_matches_eager_and_peft(tiny_model_dir, adapter_root):
    names = [a[0] for a in ORACLE_ADAPTERS[:3]]
    prompts = ("The quick dog runs", "Hello café world", "A")
    requests = [GenerationRequest(f"r{i}-{a}", p, a, SamplingParams(max_new_tokens=10, ignore_eos=True))
                for i, p in enumerate(prompts) for a in (None, *names)]  # 12 sequences: padded to 16
    outcomes = {}
    for graphs in (True, False):
        engine = Engine(EngineConfig(str(tiny_model_dir), str(adapter_root), device="cuda", max_batch_size=16,
                                     cuda_graphs=graphs))
        outcomes[graphs] = run_all(engine, requests)
        if graphs:
            assert engine.decode_graphs.enabled and engine.decode_graphs.num_replays >= 9
    model = peft_model(tiny_model_dir, adapter_root, names)
    for request in requests:
        expected = peft_greedy(model, engine.tokenizer, request.prompt, request.adapter_id, 10)
        assert outcomes[True][request.request_id].token_ids == outcomes[False][request.request_id].token_ids
        assert outcomes[True][request.request_id].token_ids == expected, request.request_id
