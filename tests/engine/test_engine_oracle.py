"""PEFT is the oracle: same adapters, same greedy tokens and logits, whatever shares the batch."""

from __future__ import annotations

import pytest

from gpu_engine.config import EngineConfig
from gpu_engine.engine import Engine
from gpu_engine.types import FinishReason, GenerationRequest, SamplingParams
from tests.engine.engine_helpers import ORACLE_ADAPTERS, peft_greedy, peft_model, run_all

PROMPTS = ("The quick dog runs", "Hello café world, the engine", "A", "kafka topic offset partition " * 3)
NAMES = [a[0] for a in ORACLE_ADAPTERS]
MAX_NEW = 10


@pytest.fixture(scope="module")
def oracle(tiny_model_dir, adapter_root):
    return peft_model(tiny_model_dir, adapter_root, NAMES)


@pytest.mark.parametrize("backend", ["loop", "grouped"])
def test_mixed_batch_greedy_matches_peft_generate(tiny_model_dir, adapter_root, oracle, backend):
    config = EngineConfig(
        str(tiny_model_dir), str(adapter_root), max_batch_size=48, max_step_tokens=96, lora_backend=backend
    )
    engine = Engine(config)
    requests = [
        GenerationRequest(f"{p}:{a}", prompt, a, SamplingParams(max_new_tokens=MAX_NEW))
        for p, prompt in enumerate(PROMPTS)
        for a in [None, *NAMES]
    ]
    outcomes = run_all(engine, requests)
    for request in requests:
        expected = peft_greedy(oracle, engine.tokenizer, request.prompt, request.adapter_id, MAX_NEW)
        assert outcomes[request.request_id].token_ids == expected, request.request_id
        assert outcomes[request.request_id].final.finish_reason is FinishReason.LENGTH

