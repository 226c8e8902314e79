"""NF4 base (bitsandbytes) on every device: our engine against PEFT over the same NF4 base there.

The CPU case runs everywhere bitsandbytes is installed; the CUDA case is collected everywhere and
skipped without a GPU (bench/gpu_check.sh runs it on the device and refuses a skip there).
"""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest
import torch

from gpu_engine.config import EngineConfig
from gpu_engine.engine import Engine
from gpu_engine.types import GenerationRequest, SamplingParams
from tests.engine.engine_helpers import peft_greedy, run_all
from tests.engine.test_engine_logits import check_logits

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes is not installed"
)
ADAPTERS = ["r8-qv", "r16-all"]
# fp32 throughout. On CUDA the engine batches rows PEFT runs one sequence at a time (another GEMM
# shape, and bitsandbytes' 4-bit GEMV for single rows), so sums are ordered differently; 1e-3 is
# the CUDA engine test's bound (tests/engine/test_engine_triton.py), 1e-4 the CPU oracle's.
ATOL = {"cpu": 1e-4, "cuda": 1e-3}
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.cuda,
                                pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]),
]


class OnDevice:
    """The PEFT oracle held on a device, taking and returning CPU tensors as the shared helpers do."""

    def __init__(self, model) -> None:
        self.model = model
        self.device = next(model.parameters()).device

    def __call__(self, input_ids: torch.Tensor):
        return SimpleNamespace(logits=self.model(input_ids=input_ids.to(self.device)).logits.cpu())

    def generate(self, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.model.generate(input_ids=input_ids.to(self.device), **kwargs).cpu()

    def disable_adapter(self):
        return self.model.disable_adapter()

    def set_adapter(self, name: str) -> None:
        self.model.set_adapter(name)


def nf4_peft(model_dir, adapter_root, device: str) -> OnDevice:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(
        str(model_dir), quantization_config=quant, dtype=torch.float32, device_map={"": device}
    )
    model = PeftModel.from_pretrained(base, str(adapter_root / ADAPTERS[0]), adapter_name=ADAPTERS[0])
    model.load_adapter(str(adapter_root / ADAPTERS[1]), adapter_name=ADAPTERS[1])
    return OnDevice(model.eval())


@pytest.mark.parametrize("device", DEVICES)
def test_nf4_base_matches_peft_on_the_same_nf4_base(tiny_model_dir, adapter_root, device):
    engine = Engine(EngineConfig(str(tiny_model_dir), str(adapter_root), quantize="nf4", device=device,
                                 max_batch_size=12))
    assert engine.model.device.type == device
    model = nf4_peft(tiny_model_dir, adapter_root, device)
    assert model.device.type == device
    check_logits(engine, model, ADAPTERS, atol=ATOL[device])
    requests = [GenerationRequest(f"{a}", "The quick dog runs", a, SamplingParams(max_new_tokens=10))
                for a in (None, *ADAPTERS)]
    outcomes = run_all(engine, requests)
    for request in requests:
        expected = peft_greedy(model, engine.tokenizer, request.prompt, request.adapter_id, 10)
        assert outcomes[request.request_id].token_ids == expected
