"""The Kafka benchmark's serving process: the engine, the running service, and the in-process path.

One engine serves both paths: the InferenceService answers what comes through Kafka, and the
in-process reference submits the same requests straight to the service's EngineThread.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from pathlib import Path

from bench.kafka_workload import StreamClock, StreamTiming, Workload
from gpu_engine.engine_thread import LoopHandoff

MODEL_SHAPE = {"hidden": 512, "layers": 4, "heads": 8, "kv_heads": 4}
ADAPTER_RANK = 8
ADAPTER_TARGETS = ("q_proj", "v_proj")
NUM_ADAPTERS = 4


def inprocess_request(runner, handoff, prompt: str, adapter_id: str | None, max_new_tokens: int) -> asyncio.Future:
    """Submit the engine request the service builds for the same InferenceRequest.

    Returns a future of its StreamTiming; events reach the event loop as the service's do (through
    a `LoopHandoff`: one loop wake-up per engine step).
    """
    from consumers.inference.answer import derived_seed
    from gpu_engine.types import GenerationRequest, SamplingParams

    done: asyncio.Future[StreamTiming] = asyncio.get_running_loop().create_future()
    request_id = uuid.uuid4().hex
    sampling = SamplingParams(max_new_tokens=max_new_tokens, seed=derived_seed(request_id))
    clock = StreamClock()

    def on_event(event) -> None:
        clock.on_tokens(len(event.token_ids))
        if event.is_final:
            done.set_result(clock.finish())

    runner.submit(GenerationRequest(request_id, prompt, adapter_id, sampling), handoff.bind(on_event))
    return done


async def inprocess_round(runner, workload: Workload) -> tuple[float, list[StreamTiming]]:
    """All requests submitted in one synchronous loop: the engine sees them arrive together."""
    handoff = LoopHandoff(asyncio.get_running_loop())
    start_s = time.perf_counter()
    n = workload.max_new_tokens
    timings = await asyncio.gather(*(inprocess_request(runner, handoff, p, a, n) for p, a in workload.requests()))
    return time.perf_counter() - start_s, list(timings)


async def inprocess_probe(runner, workload: Workload) -> list[StreamTiming]:
    handoff = LoopHandoff(asyncio.get_running_loop())
    n = workload.max_new_tokens
    return [await inprocess_request(runner, handoff, p, a, n) for p, a in workload.requests()]


def build_engine_thread(workdir: Path, args):
    """The model, NUM_ADAPTERS PEFT adapters (loaded), and an unstarted EngineThread."""
    from gpu_engine.config import EngineConfig
    from gpu_engine.engine import Engine
    from gpu_engine.engine_thread import EngineThread
    from gpu_engine.tiny import build_tiny_adapter, build_tiny_model

    model_dir = build_tiny_model(workdir / "model", **MODEL_SHAPE)
    adapter_ids = [f"bench/a{i}" for i in range(NUM_ADAPTERS)]
    for i, adapter_id in enumerate(adapter_ids):
        build_tiny_adapter(model_dir, workdir / "adapters" / adapter_id, r=ADAPTER_RANK, alpha=2 * ADAPTER_RANK,
                           target_modules=ADAPTER_TARGETS, seed=i + 1)
    config = EngineConfig(str(model_dir), str(workdir / "adapters"), device="cpu",
                          max_batch_size=args.streams, max_model_len=64 + args.new_tokens)
    engine = Engine(config)
    for adapter_id in adapter_ids:
        engine.load_adapter(adapter_id)
    return EngineThread(engine), adapter_ids


@contextlib.asynccontextmanager
async def running_service(kafka, topics, runner, chunk_flush_ms: float):
    from consumers.config import ServeConfig
    from consumers.inference import InferenceService
    from streamer.transport.kafka import KafkaTransport

    service = InferenceService(KafkaTransport(kafka), topics, ServeConfig(chunk_flush_ms=chunk_flush_ms), runner)
    task = asyncio.create_task(service.run())
    ready = asyncio.create_task(service.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises the start-up error
    if ready not in done:
        raise TimeoutError("the inference service did not become ready in 60 s")
    try:
        yield service
    finally:
        service.stop()
        await asyncio.wait_for(task, 60)
