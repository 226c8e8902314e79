"""Helpers for the engine tests: drive an engine to completion, and the PEFT reference."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from gpu_engine.engine import Engine
from gpu_engine.types import GenerationEvent, GenerationRequest

ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# (name, rank, alpha, targets, rslora): mixed ranks 4..64 and target sets, served together.
ORACLE_ADAPTERS = (
    ("r4-qv", 4, 8, ("q_proj", "v_proj"), False),
    ("r8-qv", 8, 16, ("q_proj", "v_proj"), False),
    ("r16-all", 16, 32, ALL_PROJECTIONS, False),
    ("r64-mlp", 64, 32, ("gate_proj", "up_proj", "down_proj"), False),
    ("r8-attn", 8, 8, ("q_proj", "k_proj", "v_proj", "o_proj"), True),
    ("r32-ko", 32, 64, ("k_proj", "o_proj"), False),
    ("r4-down", 4, 16, ("down_proj",), False),
    ("r16-qv-b", 16, 16, ("q_proj", "v_proj"), False),
)


@dataclass
class Outcome:
    events: list[GenerationEvent] = field(default_factory=list)

    @property
    def token_ids(self) -> list[int]:
        return [t for e in self.events for t in e.token_ids]

    @property
    def text(self) -> str:
        return "".join(e.text for e in self.events)

    @property
    def final(self) -> GenerationEvent:
        return self.events[-1]


def run_all(engine: Engine, requests: Iterable[GenerationRequest], max_steps: int = 10_000) -> dict[str, Outcome]:
    outcomes: dict[str, Outcome] = {}
    for request in requests:
        outcomes[request.request_id] = Outcome()
        engine.add_request(request)
    for _ in range(max_steps):
        if not engine.has_work():
            break
        for event in engine.step():
            outcomes[event.request_id].events.append(event)
    for request_id, outcome in outcomes.items():
        finals = [e for e in outcome.events if e.is_final]
        assert len(finals) == 1 and outcome.events[-1].is_final, f"{request_id}: {outcome.events}"
    return outcomes


def peft_model(model_dir, adapter_root, names):
    """One PeftModel holding every named adapter (the oracle)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(adapter_root / names[0]), adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(str(adapter_root / name), adapter_name=name)
    return model.eval()


def peft_greedy(model, tokenizer, prompt: str, adapter: str | None, max_new_tokens: int) -> list[int]:
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        if adapter is None:
            with model.disable_adapter():
                out = model.generate(input_ids=ids, max_new_tokens=max_new_tokens, do_sample=False)
        else:
            model.set_adapter(adapter)
            out = model.generate(input_ids=ids, max_new_tokens=max_new_tokens, do_sample=False)
    return out[0, ids.shape[1] :].tolist()
