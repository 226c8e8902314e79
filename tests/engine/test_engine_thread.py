"""EngineThread: a daemon thread that steps while there is work and delivers one final per request."""

from __future__ import annotations

import threading

import pytest

from gpu_engine.config import EngineConfig
from gpu_engine.engine import Engine
from gpu_engine.engine_thread import EngineThread
from gpu_engine.types import FinishReason, GenerationEvent, GenerationRequest, SamplingParams
from gpu_engine.errors import EngineError

TIMEOUT_S = 30


class Collector:
    """Thread-safe event sink; `wait` blocks until every expected request has its final event."""

    def __init__(self, expected: int) -> None:
        self.events: dict[str, list[GenerationEvent]] = {}
        self._lock = threading.Lock()
        self._expected = expected
        self._done = threading.Event()

    def __call__(self, event: GenerationEvent) -> None:
        with self._lock:
            self.events.setdefault(event.request_id, []).append(event)
            if sum(e.is_final for es in self.events.values() for e in es) == self._expected:
                self._done.set()

    def wait(self) -> None:
        assert self._done.wait(TIMEOUT_S), "timed out waiting for final events"

    def finals(self) -> dict[str, GenerationEvent]:
        out = {}
        for request_id, events in self.events.items():
            finals = [e for e in events if e.is_final]
            assert len(finals) == 1 and events[-1] is finals[0], request_id
            out[request_id] = finals[0]
        return out


@pytest.fixture
def runner(tiny_model_dir, adapter_root):
    engine = Engine(EngineConfig(str(tiny_model_dir), str(adapter_root), max_batch_size=4, max_step_tokens=32))
    runner = EngineThread(engine)
    runner.start()
    yield runner
    runner.stop(timeout_s=5)


def test_requests_from_many_threads_each_get_one_final(runner):
    sink = Collector(expected=12)
    adapters = [None, "r8-qv", "r16-all", "missing"]

    def submit(i: int) -> None:
        params = SamplingParams(max_new_tokens=4 + i % 3)
        runner.submit(GenerationRequest(f"r{i}", f"prompt number {i}", adapters[i % 4], params), sink)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sink.wait()
    finals = sink.finals()
    assert len(finals) == 12
    for i in range(12):
        expected = FinishReason.ERROR if adapters[i % 4] == "missing" else FinishReason.LENGTH
        assert finals[f"r{i}"].finish_reason is expected
    assert runner.num_outstanding == 0


def test_step_exception_fails_in_flight_requests_and_thread_survives(runner, monkeypatch):
    def broken_step():
        raise RuntimeError("boom")

    monkeypatch.setattr(runner.engine, "step", broken_step)
    sink = Collector(expected=2)
    runner.submit(GenerationRequest("x1", "hello"), sink)
    runner.submit(GenerationRequest("x2", "hello", "r8-qv"), sink)
    sink.wait()
    assert {e.error_code for e in sink.finals().values()} == {EngineError.code}
    monkeypatch.undo()
    ok = Collector(expected=1)
    runner.submit(GenerationRequest("x3", "hello", sampling=SamplingParams(max_new_tokens=2)), ok)
    ok.wait()
    assert ok.finals()["x3"].finish_reason is FinishReason.LENGTH


def test_abort_and_stop_each_end_requests_once(runner):
    sink = Collector(expected=2)
    runner.submit(GenerationRequest("long1", "hello", sampling=SamplingParams(max_new_tokens=10_000)), sink)
    runner.submit(GenerationRequest("long2", "hello", sampling=SamplingParams(max_new_tokens=10_000)), sink)
    runner.abort("long1")
    runner.stop(timeout_s=5)
    sink.wait()
    assert {k: e.finish_reason for k, e in sink.finals().items()} == {
        "long1": FinishReason.CANCELLED,
        "long2": FinishReason.CANCELLED,
    }
    with pytest.raises(RuntimeError):
        runner.submit(GenerationRequest("late", "hello"), sink)


def test_callback_exceptions_do_not_kill_the_thread(runner):
    def bad(event: GenerationEvent) -> None:
        raise ValueError("consumer bug")

    runner.submit(GenerationRequest("b", "hello", sampling=SamplingParams(max_new_tokens=2)), bad)
    ok = Collector(expected=1)
    runner.submit(GenerationRequest("c", "hello", sampling=SamplingParams(max_new_tokens=2)), ok)
    ok.wait()


def test_duplicate_in_flight_request_id_is_rejected(runner):
    sink = Collector(expected=1)
    runner.submit(GenerationRequest("d", "hello", sampling=SamplingParams(max_new_tokens=10_000)), sink)
    with pytest.raises(ValueError):
        runner.submit(GenerationRequest("d", "hello"), sink)
    runner.abort("d")
    sink.wait()
