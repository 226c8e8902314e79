"""The paged-KV and host-per-step parts of `lorastream bench engine`.

- `capacity`: sequences running at once under one fixed KV budget with a LoRA-Land-like mix of
  prompt and answer lengths, for the paged cache (16-position blocks) and for a slot cache
  (one `max_model_len` row per request). Both run the engine's own `Scheduler`: the slot cache
  is the same scheduler with one block of `max_model_len` positions per sequence. Pure Python.
- `host_step_us`: host time of one decode step at batch 128 on a tiny model: `eager` is the whole
  `Engine.step()` (model dispatch included); `static` is the same step with the device step
  (`step_runner.device_step`: the forward pass and each row's greedy argmax, what one CUDA-graph
  replay runs) replaced by a stub that returns its outputs — scheduling, batch assembly and the
  packed index upload, reading the tokens back, sampling bookkeeping, detokenization and
  events: what stays on the host.
"""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path

import torch

# LoRA Land's tasks: classification / extraction / short generation. Prompt tokens mostly short,
# some long documents; answers from one label token to a few sentences.
PROMPT_TOKENS = ((0.45, 40, 160), (0.35, 160, 512), (0.15, 512, 1024), (0.05, 1024, 2048))
ANSWER_TOKENS = ((0.5, 1, 8), (0.35, 8, 64), (0.15, 64, 256))
MAX_MODEL_LEN = 4096
KV_BUDGET_POSITIONS = 16 * MAX_MODEL_LEN  # what 16 slots of max_model_len take
BLOCK_SIZE = 16


def _draw(rng: random.Random, mix) -> int:
    x, acc = rng.random(), 0.0
    for share, low, high in mix:
        acc += share
        if x <= acc:
            return rng.randint(low, high - 1)
    return mix[-1][2] - 1


def _running_at_once(num_blocks: int, block_size: int, num_requests: int, seed: int) -> float:
    """Mean sequences running per step while requests are still waiting (a saturated server)."""
    from gpu_engine.scheduler import Scheduler
    from gpu_engine.seq_state import SeqState
    from gpu_engine.types import GenerationRequest

    rng = random.Random(seed)
    scheduler = Scheduler(1 << 20, 1 << 20, num_kv_blocks=num_blocks, kv_block_size=block_size)
    answers: dict[str, int] = {}
    for i in range(num_requests):
        seq = SeqState.from_prompt(GenerationRequest(f"r{i}", "p"), [1] * _draw(rng, PROMPT_TOKENS))
        answers[seq.request_id] = _draw(rng, ANSWER_TOKENS)
        scheduler.add(seq)
    counts = []
    while scheduler.num_waiting:
        chunks = scheduler.schedule()
        counts.append(scheduler.num_running)
        for chunk in chunks:
            completes = chunk.completes
            chunk.seq.num_computed += chunk.num_tokens
            if completes:
                chunk.seq.append_token(1)
                if chunk.seq.num_new_tokens >= answers[chunk.seq.request_id]:
                    scheduler.finish(chunk.seq)
    return statistics.fmean(counts)


def capacity(num_requests: int = 2000, seed: int = 0) -> dict[str, float]:
    paged = _running_at_once(KV_BUDGET_POSITIONS // BLOCK_SIZE, BLOCK_SIZE, num_requests, seed)
    slot = _running_at_once(KV_BUDGET_POSITIONS // MAX_MODEL_LEN, MAX_MODEL_LEN, num_requests, seed)
    return {"kv_budget_positions": KV_BUDGET_POSITIONS, "max_model_len": MAX_MODEL_LEN, "block_size": BLOCK_SIZE,
            "paged_running": paged, "slot_running": slot}


def _stub_device_step(tokenizer, vocab_size: int, batch_size: int):
    """A device step that costs the host nothing: fixed logits and their argmax, a word token per row
    (a token whose text is whole characters, as a model's answer mostly is)."""
    from gpu_engine.step_runner import DeviceOutputs

    words = [t for t in range(vocab_size) if (text := tokenizer.decode([t])).strip() and "\ufffd" not in text]
    rng = random.Random(0)
    greedy = torch.tensor([rng.choice(words) for _ in range(batch_size)])
    logits = torch.zeros(batch_size, vocab_size)
    logits[torch.arange(batch_size), greedy] = 1.0

    def device_step(engine, tensors, lora):
        rows = tensors.shape.num_samples
        return DeviceOutputs(logits[:rows], greedy[:rows])

    return device_step


def host_step_us(workdir: Path, batch_size: int = 128, steps: int = 40) -> dict[str, float]:
    """Median CPU µs of one decode step (one compute thread), eager and with the forward stubbed."""
    from gpu_engine import step_runner
    from gpu_engine.config import EngineConfig
    from gpu_engine.engine import Engine
    from gpu_engine.tiny import build_tiny_model
    from gpu_engine.types import GenerationRequest, SamplingParams

    model_dir = build_tiny_model(workdir / "tiny-host-step", vocab_size=512)
    engine = Engine(EngineConfig(str(model_dir), max_batch_size=batch_size, max_model_len=64 + 2 * steps))
    vocab = engine.model.lm_head.shape[0]
    results = {}
    real_device_step = step_runner.device_step
    for name, stub in (("eager", None), ("static", _stub_device_step(engine.tokenizer, vocab, batch_size))):
        step_runner.device_step = stub or real_device_step
        try:
            params = SamplingParams(max_new_tokens=steps + 2, ignore_eos=True)
            for i in range(batch_size):
                engine.add_request(GenerationRequest(f"{name}{i}", "The quick model serves many adapters", None, params))
            engine.step()  # prefill
            times = []
            while engine.has_work():
                start = time.thread_time_ns()
                engine.step()
                times.append(time.thread_time_ns() - start)
        finally:
            step_runner.device_step = real_device_step
        results[name] = statistics.median(times[:-1]) / 1000  # the last step only finishes
    return results
