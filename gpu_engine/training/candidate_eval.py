"""Answers of a trained candidate, of the base and of other adapter versions to the same prompts,
decoded the way the inference consumers decode them: one `Engine` (the serving code path:
continuous batching, segmented LoRA, the adapter cache), greedy, each adapter version registered by
its directory. Scoring the answers is the caller's (the metric belongs to the task). Blocking and
torch-heavy: the training worker calls `generate_answers` in a thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gpu_engine.adapter_ref import AdapterRef
from gpu_engine.training.errors import TrainErrorCode, TrainingError

BASE = "base"  # the label of the base model's answers
_MAX_STEPS_PER_TOKEN = 64  # a bound on engine steps, far above what batching ever needs


class EvaluationFailed(TrainingError):
    """The engine could not answer an evaluation prompt (the adapter did not load, the prompt is too long)."""

    code = TrainErrorCode.INTERNAL


@dataclass(frozen=True)
class CandidateEvalConfig:
    base_model_path: str
    device: str = "auto"
    max_batch_size: int = 32

    def __post_init__(self) -> None:
        if not self.base_model_path:
            raise ValueError("base_model_path must not be empty")
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")


def generate_answers(
    config: CandidateEvalConfig,
    prompts: Sequence[str],
    adapter_dirs: Mapping[str, str],
    max_new_tokens: int,
) -> dict[str, list[str]]:
    """label → the answer text to each prompt, for the base (label BASE) and each adapter directory.

    Labels name the adapters inside the engine only. Raises EvaluationFailed when any answer ends
    in an engine error.
    """
    from gpu_engine.config import EngineConfig
    from gpu_engine.engine import Engine
    from gpu_engine.types import GenerationRequest, SamplingParams

    if BASE in adapter_dirs:
        raise ValueError(f"{BASE!r} is the base model's label")
    roots = tuple(str(Path(d).resolve().parent) for d in adapter_dirs.values())
    engine = Engine(
        EngineConfig(
            config.base_model_path,
            device=config.device,
            max_batch_size=config.max_batch_size,
            adapter_uri_roots=tuple(dict.fromkeys(roots)),
        )
    )
    for label, path in adapter_dirs.items():
        engine.register_adapter(AdapterRef(label, 1, Path(path).resolve().as_uri()))
    sampling = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
    texts: dict[str, list[str]] = {}
    for label in (BASE, *adapter_dirs):
        for i, prompt in enumerate(prompts):
            adapter_id = None if label == BASE else label
            engine.add_request(GenerationRequest(f"{label}:{i}", prompt, adapter_id, sampling))
            texts[f"{label}:{i}"] = []
    pending = set(texts)
    for _ in range(_MAX_STEPS_PER_TOKEN * (max_new_tokens + 1) * max(1, len(texts))):
        if not pending:
            break
        for event in engine.step():
            texts[event.request_id].append(event.text)
            if event.is_final:
                pending.discard(event.request_id)
                if event.error_code is not None:
                    raise EvaluationFailed(f"evaluation prompt {event.request_id}: {event.error_code}: "
                                           f"{event.error_message}")
    if pending:
        raise EvaluationFailed(f"{len(pending)} evaluation prompts did not finish")
    return {
        label: ["".join(texts[f"{label}:{i}"]) for i in range(len(prompts))] for label in (BASE, *adapter_dirs)
    }
