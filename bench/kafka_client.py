"""The Kafka benchmark's load generator: a separate process with its own LoraClient.

Real clients run in their own processes, so the Kafka path is driven from one: the serving
process sends it commands over a pipe ("round", "probe", "submit") and gets timings back.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from typing import Self

from bench.kafka_workload import StreamClock, StreamTiming, Workload


async def kafka_stream(client, prompt: str, adapter_id: str | None, max_new_tokens: int) -> StreamTiming:
    from schemas import TokenChunk

    clock = StreamClock()
    async for record in client.stream(prompt, adapter_id, max_new_tokens=max_new_tokens):
        if isinstance(record, TokenChunk):
            clock.on_tokens(len(record.token_ids))
    return clock.finish()


async def kafka_round(client, workload: Workload) -> tuple[float, list[StreamTiming]]:
    """All streams started at once, each sending its request on its first iteration."""
    start_s = time.perf_counter()
    n = workload.max_new_tokens
    timings = await asyncio.gather(*(kafka_stream(client, p, a, n) for p, a in workload.requests()))
    return time.perf_counter() - start_s, list(timings)


async def kafka_probe(client, workload: Workload) -> list[StreamTiming]:
    """One request at a time: the latency of the Kafka hops with nothing else running."""
    return [await kafka_stream(client, p, a, workload.max_new_tokens) for p, a in workload.requests()]


async def measure_submit_rps(kafka, topics, workload: Workload, count: int) -> float:
    """Requests published per second: `count` concurrent `submit`s until the broker acked all."""
    from streamer import LoraClient

    requests = list(workload.requests())
    async with LoraClient(config=kafka, topics=topics) as client:
        start_s = time.perf_counter()
        await asyncio.gather(
            *(
                client.submit(*requests[i % len(requests)], max_new_tokens=workload.max_new_tokens)
                for i in range(count)
            )
        )
        return count / (time.perf_counter() - start_s)


async def serve_client_commands(conn, kafka, topics, submit_topics) -> None:
    """Answer ("round" | "probe", workload) and ("submit", workload, count) until ("stop",)."""
    from streamer import LoraClient

    async with LoraClient(config=kafka, topics=topics) as client:
        conn.send(("ready",))
        while (command := await asyncio.to_thread(conn.recv))[0] != "stop":
            if command[0] == "round":
                conn.send(await kafka_round(client, command[1]))
            elif command[0] == "probe":
                conn.send(await kafka_probe(client, command[1]))
            else:
                conn.send(await measure_submit_rps(kafka, submit_topics, command[1], command[2]))


def client_process_main(conn, kafka, topics, submit_topics) -> None:
    try:
        asyncio.run(serve_client_commands(conn, kafka, topics, submit_topics))
    except BaseException as exc:
        conn.send(("error", repr(exc)))
        raise


class ClientProcess:
    """The load generator: a separate process with its own LoraClient, driven over a pipe."""

    def __init__(self, kafka, topics, submit_topics) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(
            target=client_process_main, args=(child_conn, kafka, topics, submit_topics), daemon=True
        )

    @property
    def pid(self) -> int | None:
        return self._process.pid

    async def __aenter__(self) -> Self:
        self._process.start()
        await self._ask(None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._process.is_alive():
            self._conn.send(("stop",))
        await asyncio.to_thread(self._process.join, 30)
        if self._process.is_alive():
            self._process.kill()

    async def _ask(self, command):
        if command is not None:
            self._conn.send(command)
        try:
            answer = await asyncio.to_thread(self._conn.recv)
        except EOFError:
            raise RuntimeError(f"the client process exited with code {self._process.exitcode}") from None
        if isinstance(answer, tuple) and answer and answer[0] == "error":
            raise RuntimeError(f"the client process failed: {answer[1]}")
        return answer

    async def round(self, workload: Workload) -> tuple[float, list[StreamTiming]]:
        return await self._ask(("round", workload))

    async def probe(self, workload: Workload) -> list[StreamTiming]:
        return await self._ask(("probe", workload))

    async def submit_rps(self, workload: Workload, count: int) -> float:
        return await self._ask(("submit", workload, count))
