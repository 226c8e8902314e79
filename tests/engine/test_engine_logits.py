"""Logits of one mixed step (8 adapters + base, prefill then decode) against PEFT, per architecture."""

from __future__ import annotations

import pytest
import torch

from gpu_engine.config import EngineConfig
from gpu_engine.engine import Engine
from gpu_engine.errors import UnsupportedModelError
from gpu_engine.lora_ops import LoraStep
from gpu_engine.segments import find_segments, segment_sort_key
from gpu_engine.step_buffers import SeqChunk, pack_step
from gpu_engine.step_runner import forward_step
from gpu_engine.tiny import build_tiny_adapter, build_tiny_model
from gpu_engine.types import GenerationRequest, SamplingParams
from tests.engine.engine_helpers import ORACLE_ADAPTERS, peft_greedy, peft_model, run_all

PROMPTS = ("The quick dog runs", "Hello café world, the engine and the topic", "A", "kafka " * 9)
NAMES = [a[0] for a in ORACLE_ADAPTERS]
ATOL = 1e-4


def mixed_step_logits(engine: Engine, items: list[tuple[list[int], str | None]], next_tokens: list[int] | None):
    """Run all prompts as one prefill step (every row's logits), or one decode step after it."""
    keys = [None if a is None else engine.load_adapter(a) for _, a in items]
    per_seq = -(-engine.max_model_len // engine.kv_cache.block_size)
    tables = [list(range(i * per_seq, (i + 1) * per_seq)) for i in range(len(items))]  # disjoint block tables
    order = sorted(range(len(items)), key=lambda i: segment_sort_key(keys[i]))
    ids, positions, chunks, rows = [], [], [], []
    for i in order:
        prompt = items[i][0]
        if next_tokens is None:
            chunk_ids, start = prompt, 0
        else:
            chunk_ids, start = [next_tokens[i]], len(prompt)
        chunks.append(SeqChunk(len(ids), len(chunk_ids), start, tables[i]))
        rows.append(list(range(len(ids), len(ids) + len(chunk_ids))))
        ids += chunk_ids
        positions += range(start, start + len(chunk_ids))
    segments = find_segments([keys[i] for i in order], [c.num_rows for c in chunks])
    kv_cache = engine.kv_cache
    flat, shape = pack_step(chunks, ids, range(len(ids)), kv_cache.block_size, kv_cache.null_block)
    with torch.inference_mode():
        logits = forward_step(engine, engine.step_staging.upload(flat, shape),
                              LoraStep(engine.bank, segments, engine.lora_backend))
    out: list[torch.Tensor] = [torch.empty(0)] * len(items)
    for i, row_ids in zip(order, rows):
        out[i] = logits[row_ids]
    return out


def reference_logits(model, ids: list[int], adapter: str | None) -> torch.Tensor:
    with torch.no_grad():
        if adapter is None:
            with model.disable_adapter():
                return model(input_ids=torch.tensor([ids])).logits[0]
        model.set_adapter(adapter)
        return model(input_ids=torch.tensor([ids])).logits[0]


def check_logits(engine, model, adapters, atol: float = ATOL):
    items = [(engine.tokenizer(p).input_ids, a) for p in PROMPTS for a in [None, *adapters]]
    prefill = mixed_step_logits(engine, items, None)
    next_tokens = [int(logits[-1].argmax()) for logits in prefill]
    decode = mixed_step_logits(engine, items, next_tokens)
    for (ids, adapter), got_prefill, got_decode, token in zip(items, prefill, decode, next_tokens):
        expected = reference_logits(model, ids + [token], adapter)
        torch.testing.assert_close(got_prefill.cpu(), expected[:-1], rtol=0, atol=atol, msg=f"prefill {adapter}")
        torch.testing.assert_close(got_decode[0].cpu(), expected[-1], rtol=0, atol=atol, msg=f"decode {adapter}")


@pytest.mark.parametrize("backend", ["loop", "grouped"])
def test_eight_adapters_and_base_in_one_step_match_peft_logits(tiny_model_dir, adapter_root, backend):
    engine = Engine(EngineConfig(str(tiny_model_dir), str(adapter_root), max_batch_size=40, lora_backend=backend))
    check_logits(engine, peft_model(tiny_model_dir, adapter_root, NAMES), NAMES)


@pytest.mark.parametrize(
    ("arch", "kwargs"),
    [
        ("mistral", {"sliding_window": 5}),
        ("qwen2", {}),
        ("qwen2", {"sliding_window": 4}),
        ("llama", {"tie_word_embeddings": True, "kv_heads": 4}),
    ],
)
def test_architectures_match_hf_logits_and_greedy_tokens(tmp_path, tiny_tokenizer_dir, arch, kwargs):
    model_dir = build_tiny_model(tmp_path / arch, arch=arch, tokenizer_dir=tiny_tokenizer_dir, **kwargs)
    build_tiny_adapter(model_dir, tmp_path / "adapters" / "all", r=8,
                       target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))
    engine = Engine(EngineConfig(str(model_dir), str(tmp_path / "adapters"), max_batch_size=10))
    model = peft_model(model_dir, tmp_path / "adapters", ["all"])
    check_logits(engine, model, ["all"])
    fresh = Engine(EngineConfig(str(model_dir), str(tmp_path / "adapters"), max_batch_size=10))
    requests = [GenerationRequest(f"{i}-{a}", p, a, SamplingParams(max_new_tokens=12))
                for i, p in enumerate(PROMPTS) for a in (None, "all")]
    outcomes = run_all(fresh, requests)
    for request in requests:
        expected = peft_greedy(model, fresh.tokenizer, request.prompt, request.adapter_id, 12)
        assert outcomes[request.request_id].token_ids == expected, request.request_id


def test_unsupported_architecture_is_a_clear_error(tmp_path, tiny_tokenizer_dir):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=512)).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError, match="gpt2"):
        Engine(EngineConfig(str(tmp_path)))
