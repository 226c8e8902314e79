"""PEFT as the correctness oracle: greedy continuations from `PeftModel.generate`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch


@lru_cache(maxsize=8)
def _models(model_dir: str, adapter_dir: str | None):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, adapter_dir)
    return tokenizer, model.eval()


def greedy_tokens(model_dir: Path, adapter_dir: Path | None, prompt: str, max_new_tokens: int) -> list[int]:
    tokenizer, model = _models(str(model_dir), None if adapter_dir is None else str(adapter_dir))
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    return out[0, inputs["input_ids"].shape[1] :].tolist()
