"""The serving side of the Kafka path alone: loop-thread CPU per token from engine events to the outbox.

`bench.kafka` measures whole processes against a broker, on a machine whose load moves the figures
by more than the service's own work. This isolates that work: an EngineThread whose engine emits
one token per stream every `--step-ms`, the service's AnswerWriter (LoopHandoff, chunk sizing,
ChunkBatcher, Outbox) and a producer that acknowledges at once. It reports the event-loop thread's
CPU µs per token and the records sent (chunk records, Finals, results copies).

    .venv/bin/python -m bench.kafka_answer_path [--streams 64] [--new-tokens 64] [--step-ms 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from consumers.config import ServeConfig
from consumers.inference.answer import Answer
from consumers.inference.answer_writer import AnswerWriter
from consumers.inference.translate import apply_event
from consumers.metrics import Metrics
from gpu_engine.engine_thread import EngineThread
from gpu_engine.types import FinishReason, GenerationEvent, GenerationRequest, SamplingParams
from schemas import InferenceRequest, ReplyAddress
from streamer import TopicNames
from streamer.outbox import Outbox
from streamer.reply_topics import ReplyTopicDirectory


class PacedEngine:
    """Enough of an Engine for EngineThread: once all streams are in, a step every `step_s`, one
    token per stream, the last step ending them all."""

    def __init__(self, streams: int, new_tokens: int, step_s: float) -> None:
        self.streams, self.new_tokens, self.step_s = streams, new_tokens, step_s
        self.request_ids: list[str] = []
        self.steps = 0
        self._next_step_s = 0.0

    def add_wakeup_listener(self, listener) -> None:
        pass

    def add_request(self, request: GenerationRequest) -> None:
        self.request_ids.append(request.request_id)

    def has_runnable_work(self) -> bool:
        return len(self.request_ids) == self.streams and self.steps < self.new_tokens

    def idle_timeout_s(self) -> float:
        return 0.001

    def step(self) -> list[GenerationEvent]:
        time.sleep(max(0.0, self._next_step_s - time.monotonic()))
        self._next_step_s = time.monotonic() + self.step_s
        self.steps += 1
        finish = FinishReason.LENGTH if self.steps == self.new_tokens else None
        return [GenerationEvent(rid, text=" tok", token_ids=(self.steps,), finish_reason=finish, prompt_tokens=10)
                for rid in self.request_ids]


class AckingProducer:
    def __init__(self) -> None:
        self.num_records = 0

    async def send(self, topic, value, key=None, partition=None) -> asyncio.Future:
        self.num_records += 1
        acked = asyncio.get_running_loop().create_future()
        acked.set_result(None)
        return acked


async def measure(streams: int, new_tokens: int, step_ms: float, chunk_flush_ms: float) -> dict:
    loop = asyncio.get_running_loop()
    producer, metrics, settled = AckingProducer(), Metrics(), asyncio.Event()
    remaining = [streams]

    def on_settled(answer: Answer) -> None:
        remaining[0] -= 1
        if remaining[0] == 0:
            settled.set()

    writer = AnswerWriter(
        outbox=Outbox(producer), loop=loop, topics=TopicNames("bench"), config=ServeConfig(chunk_flush_ms=chunk_flush_ms),
        metrics=metrics, directory=ReplyTopicDirectory(lambda topic: None), lookup=lambda request_id: None,
        abort=lambda request_id: None, settled=on_settled,
    )
    runner = EngineThread(PacedEngine(streams, new_tokens, step_ms / 1000.0))
    for i in range(streams):
        request = InferenceRequest(request_id=f"r{i}", prompt="p", reply_to=ReplyAddress("replies", 0), batch_chunks=True)
        answer = Answer(request, b"raw", "requests", 0, i, attempt=0)
        on_event = writer.handoff.bind(lambda a, event: apply_event(a, event, writer, metrics), answer)
        runner.submit(GenerationRequest(request.request_id, "p", None, SamplingParams(max_new_tokens=new_tokens)), on_event)
    cpu_start_s = time.thread_time()
    runner.start()
    try:
        await asyncio.wait_for(settled.wait(), 60 + new_tokens * step_ms / 1000.0)
    finally:
        runner.stop()
    cpu_s = time.thread_time() - cpu_start_s
    tokens = streams * new_tokens
    return {
        "streams": streams, "new_tokens": new_tokens, "step_ms": step_ms, "chunk_flush_ms": chunk_flush_ms,
        "loop_cpu_us_per_token": cpu_s * 1e6 / tokens,
        "records": producer.num_records,
        "chunk_records": writer.batcher.records_sent,
        "chunks_per_chunk_record": writer.batcher.chunks_sent / max(writer.batcher.records_sent, 1),
        "loop_wakeups": writer.handoff.num_wakeups,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kafka_answer_path", description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=64, help="concurrent streams (default %(default)s)")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens per stream (default %(default)s)")
    parser.add_argument("--step-ms", type=float, default=30.0, help="time between engine steps (default %(default)s)")
    parser.add_argument("--chunk-flush-ms", type=float, default=ServeConfig().chunk_flush_ms,
                        help="the service's chunk hold (default %(default)s, as `lorastream serve`)")
    parser.add_argument("--repeat", type=int, default=3, help="runs; each is printed (default %(default)s)")
    args = parser.parse_args(argv)
    if min(args.streams, args.new_tokens, args.repeat) < 1 or args.step_ms < 0:
        parser.error("--streams, --new-tokens and --repeat must be >= 1, --step-ms >= 0")
    for _ in range(args.repeat):
        print(json.dumps(asyncio.run(measure(args.streams, args.new_tokens, args.step_ms, args.chunk_flush_ms))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
