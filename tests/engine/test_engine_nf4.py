"""NF4 base (bitsandbytes): our engine against PEFT over the same quantized base."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

from gpu_engine.config import EngineConfig
from gpu_engine.engine import Engine
from gpu_engine.types import GenerationRequest, SamplingParams
from tests.engine.engine_helpers import peft_greedy, run_all
from tests.engine.test_engine_logits import check_logits

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes is not installed"
)
ADAPTERS = ["r8-qv", "r16-all"]


def nf4_peft(model_dir, adapter_root):
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(
        str(model_dir), quantization_config=quant, dtype=torch.float32, device_map={"": "cpu"}
    )
    model = PeftModel.from_pretrained(base, str(adapter_root / ADAPTERS[0]), adapter_name=ADAPTERS[0])
    model.load_adapter(str(adapter_root / ADAPTERS[1]), adapter_name=ADAPTERS[1])
    return model.eval()


def test_nf4_base_matches_peft_on_the_same_nf4_base(tiny_model_dir, adapter_root):
    engine = Engine(EngineConfig(str(tiny_model_dir), str(adapter_root), quantize="nf4", device="cpu",
                                 max_batch_size=12))
    model = nf4_peft(tiny_model_dir, adapter_root)
    check_logits(engine, model, ADAPTERS)
    requests = [GenerationRequest(f"{a}", "The quick dog runs", a, SamplingParams(max_new_tokens=10))
                for a in (None, *ADAPTERS)]
    outcomes = run_all(engine, requests)
    for request in requests:
        expected = peft_greedy(model, engine.tokenizer, request.prompt, request.adapter_id, 10)
        assert outcomes[request.request_id].token_ids == expected
