"""LoopHandoff: engine events reach an asyncio loop in order, one loop wake-up per burst."""

from __future__ import annotations

import asyncio
import threading

from gpu_engine.engine_thread import LoopHandoff
from gpu_engine.types import FinishReason, GenerationEvent

TIMEOUT_S = 10


class CountingLoopCalls:
    """Counts call_soon_threadsafe on the running loop (the wake-ups a hand-off costs)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, monkeypatch) -> None:
        self.count = 0
        original = loop.call_soon_threadsafe

        def counted(*args, **kwargs):
            self.count += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(loop, "call_soon_threadsafe", counted)


async def test_a_burst_from_another_thread_is_one_wakeup_in_order(monkeypatch):
    loop = asyncio.get_running_loop()
    wakeups = CountingLoopCalls(loop, monkeypatch)
    seen: list[tuple[str, int]] = []
    batches: list[int] = []
    handoff = LoopHandoff(loop, after_batch=lambda: batches.append(len(seen)))
    callbacks = {rid: handoff.bind(lambda rid, event: seen.append((rid, event.token_ids[0])), rid) for rid in "ab"}

    def engine_step() -> None:  # one step: a token for each request, delivered back to back
        for token in range(3):
            for rid, callback in callbacks.items():
                callback(GenerationEvent(rid, text="x", token_ids=(token,)))

    thread = threading.Thread(target=engine_step)
    thread.start()
    thread.join(TIMEOUT_S)
    assert seen == []  # nothing runs on the engine thread
    await asyncio.sleep(0)
    assert seen == [(rid, t) for t in range(3) for rid in "ab"]
    assert wakeups.count == 1 and handoff.num_wakeups == 1 and handoff.num_events == 6
    assert batches == [6]  # after_batch once, after the whole burst


async def test_events_after_a_drain_schedule_the_next_one():
    loop = asyncio.get_running_loop()
    seen: list[int] = []
    handoff = LoopHandoff(loop)
    callback = handoff.bind(lambda event: seen.append(event.token_ids[0]))
    for burst in range(3):
        done = threading.Event()
        thread = threading.Thread(target=lambda b=burst: (callback(GenerationEvent("r", token_ids=(b,))), done.set()))
        thread.start()
        assert done.wait(TIMEOUT_S)
        for _ in range(100):
            if len(seen) == burst + 1:
                break
            await asyncio.sleep(0.001)
    assert seen == [0, 1, 2] and handoff.num_wakeups == 3


async def test_a_failing_callback_does_not_lose_the_rest_of_the_batch():
    loop = asyncio.get_running_loop()
    seen: list[str] = []

    def fails(event):
        raise RuntimeError("bug")

    handoff = LoopHandoff(loop)
    handoff.bind(fails)(GenerationEvent("bad", token_ids=(1,)))
    handoff.bind(lambda event: seen.append(event.request_id))(GenerationEvent("ok", finish_reason=FinishReason.EOS))
    await asyncio.sleep(0)
    assert seen == ["ok"]


class StepEngine:
    """Just enough of an Engine for EngineThread: each step emits one token per request, then finals."""

    def __init__(self, num_steps: int) -> None:
        self.requests: list[str] = []
        self.num_steps = num_steps
        self.steps = 0
        self.started = threading.Event()

    def add_wakeup_listener(self, listener) -> None:
        pass

    def add_request(self, request) -> None:
        self.requests.append(request.request_id)

    def has_runnable_work(self) -> bool:
        return self.started.is_set() and self.steps < self.num_steps

    def idle_timeout_s(self) -> float:
        return 0.01

    def step(self) -> list[GenerationEvent]:
        self.steps += 1
        final = self.steps == self.num_steps
        return [
            GenerationEvent(rid, text="x", token_ids=(self.steps,), finish_reason=FinishReason.LENGTH if final else None)
            for rid in self.requests
        ]


async def test_engine_thread_hands_each_steps_events_over_at_once():
    from gpu_engine.engine_thread import EngineThread
    from gpu_engine.types import GenerationRequest, SamplingParams

    loop = asyncio.get_running_loop()
    batches: list[list[tuple[str, int]]] = []
    current: list[tuple[str, int]] = []
    finals = asyncio.Event()
    engine = StepEngine(num_steps=5)

    def on_event(rid: str, event: GenerationEvent) -> None:
        current.append((rid, event.token_ids[0]))
        if event.is_final and rid == "r7":
            finals.set()

    def after_batch() -> None:
        batches.append(current.copy())
        current.clear()

    handoff = LoopHandoff(loop, after_batch=after_batch)
    runner = EngineThread(engine)
    for i in range(8):
        runner.submit(GenerationRequest(f"r{i}", "p", None, SamplingParams()), handoff.bind(on_event, f"r{i}"))
    engine.started.set()
    runner.start()
    try:
        await asyncio.wait_for(finals.wait(), TIMEOUT_S)
    finally:
        runner.stop(timeout_s=5)
    events = [e for batch in batches for e in batch]
    assert events == [(f"r{i}", step) for step in range(1, 6) for i in range(8)]
    assert all(len(batch) % 8 == 0 for batch in batches)  # a step's events are never split
    assert handoff.num_wakeups == len(batches) <= 5


def test_engine_thread_counts_its_steps_and_names_its_os_thread():
    from gpu_engine.engine_thread import EngineThread
    from gpu_engine.types import GenerationRequest, SamplingParams

    engine = StepEngine(num_steps=3)
    runner = EngineThread(engine)
    assert runner.native_id is None and runner.num_steps == 0
    done = threading.Event()
    runner.submit(GenerationRequest("r", "p", None, SamplingParams()), lambda event: event.is_final and done.set())
    engine.started.set()
    runner.start()
    try:
        assert done.wait(TIMEOUT_S)
        assert runner.num_steps == 3
        assert runner.native_id not in (None, threading.get_native_id())
    finally:
        runner.stop(timeout_s=5)
