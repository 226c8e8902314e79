"""SIGTERM drains in-flight requests and exits cleanly; a full admission queue pauses intake
(while the consumer keeps polling) and resumes below the low-water mark."""

from __future__ import annotations

import asyncio

import pytest

from consumers.config import ServeConfig
from consumers.inference import InferenceService
from streamer.transport.kafka import KafkaTransport
from consumers.serve import build_engine_thread
from schemas import Final, FinishReason
from streamer import KafkaConfig, LoraClient, TopicNames

pytestmark = pytest.mark.kafka


async def test_sigterm_drains_in_flight_requests(kafka_bootstrap, topic_prefix, serve_process, report_counts):
    kafka, topics = KafkaConfig(bootstrap_servers=kafka_bootstrap), TopicNames(topic_prefix)
    process = serve_process("drain-a")
    finals: dict[str, Final] = {}
    started = asyncio.Event()

    async def one(client: LoraClient, i: int) -> None:
        async for record in client.stream(f"drain {i}", max_new_tokens=120, request_id=f"d-{i}"):
            started.set()
            if isinstance(record, Final):
                finals[record.request_id] = record

    async with LoraClient(config=kafka, topics=topics) as client:
        tasks = [asyncio.create_task(one(client, i)) for i in range(20)]
        await asyncio.wait_for(started.wait(), 120)
        in_flight = 20 - len(finals)
        code = await asyncio.to_thread(process.terminate, 90)
        done, pending = await asyncio.wait(tasks, timeout=30)
        for task in pending:
            task.cancel()
    report_counts(f"shutdown: in flight at SIGTERM={in_flight} answered={len(finals)} exit code={code}")
    assert code == 0
    assert in_flight > 0 and not pending
    assert all(f.finish_reason in (FinishReason.LENGTH, FinishReason.EOS) for f in finals.values()), [
        f.finish_reason for f in finals.values()
    ]


class _CountingEngine:
    """Wraps the engine runner to record the most requests it ever held at once."""

    def __init__(self, runner) -> None:
        self._runner = runner
        self.outstanding = 0
        self.max_outstanding = 0

    def start(self) -> None:
        self._runner.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._runner.stop(timeout_s)

    def abort(self, request_id: str) -> None:
        self._runner.abort(request_id)

    def submit(self, request, on_event) -> None:
        self.outstanding += 1
        self.max_outstanding = max(self.max_outstanding, self.outstanding)

        def wrapped(event) -> None:
            if event.is_final:
                self.outstanding -= 1
            on_event(event)

        self._runner.submit(request, wrapped)


async def test_backpressure_pauses_and_resumes(kafka_bootstrap, topic_prefix, tiny_model, report_counts):
    model_dir, adapter_root = tiny_model
    kafka, topics = KafkaConfig(bootstrap_servers=kafka_bootstrap), TopicNames(topic_prefix)
    runner = _CountingEngine(build_engine_thread(model_path=str(model_dir), adapter_root=str(adapter_root), device="cpu"))
    config = ServeConfig(max_inflight=4, resume_below=2, max_fetch_records=4, request_partitions=2)
    service = InferenceService(KafkaTransport(kafka), topics, config, runner)
    pauses = []
    original = service.intake.apply_backpressure

    def observe(inflight: int) -> None:
        was_paused = service.intake.paused
        original(inflight)
        if service.intake.paused and not was_paused:
            pauses.append(len(service.answers))

    service.intake.apply_backpressure = observe
    task = asyncio.create_task(service.run())
    await asyncio.wait_for(service.ready.wait(), 60)
    async with LoraClient(config=kafka, topics=topics) as client:
        finals = await asyncio.wait_for(
            asyncio.gather(*(client.generate(f"bp {i}", max_new_tokens=20) for i in range(40))), 180
        )
    service.stop()
    await asyncio.wait_for(task, 60)
    report_counts(f"backpressure: pauses={len(pauses)} max engine in-flight={runner.max_outstanding}")
    assert len(finals) == 40
    assert pauses, "intake never paused"
    assert runner.max_outstanding <= config.max_inflight + config.max_fetch_records
