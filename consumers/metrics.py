"""Prometheus metrics (per-adapter labels) and the HTTP endpoint for /metrics, /healthz, /readyz.

Each service owns a `Metrics` with its own registry, so several services in one process (tests,
the demo) never collide on metric names.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)

BASE_LABEL = "__base__"
UNRESOLVED_LABEL = "__unresolved__"  # every adapter id the engine could not resolve shares this label
_MS_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "lorastream_requests", "Requests answered (Final or Error), by resolved adapter", ["adapter"], registry=r
        )
        self.finished = Counter(
            "lorastream_finished", "Requests answered with a Final", ["adapter", "finish_reason"], registry=r
        )
        self.errors = Counter("lorastream_errors", "Requests answered with an Error", ["adapter", "code"], registry=r)
        self.dead_letters = Counter("lorastream_dead_letters", "Records sent to the dead-letter topic", ["code"], registry=r)
        self.prompt_tokens = Counter("lorastream_prompt_tokens", "Prompt tokens", ["adapter"], registry=r)
        self.completion_tokens = Counter(
            "lorastream_completion_tokens", "Generated tokens (rate() gives tokens/s)", ["adapter"], registry=r
        )
        self.queue_ms = Histogram("lorastream_queue_ms", "Received → engine", ["adapter"], buckets=_MS_BUCKETS, registry=r)
        self.ttft_ms = Histogram("lorastream_ttft_ms", "Received → first token", ["adapter"], buckets=_MS_BUCKETS, registry=r)
        self.total_ms = Histogram("lorastream_total_ms", "Received → answered", ["adapter"], buckets=_MS_BUCKETS, registry=r)
        self.adapter_tier = Counter(
            "lorastream_adapter_tier_requests",
            "Requests by the cache tier their adapter was in when they arrived (store: loaded for them)",
            ["adapter", "tier"],
            registry=r,
        )
        self.inflight = Gauge("lorastream_inflight", "Requests admitted and not yet answered", registry=r)
        self.assigned_partitions = Gauge(
            "lorastream_assigned_partitions", "Request partitions this consumer owns", registry=r
        )
        self.paused = Gauge("lorastream_paused", "1 while intake is paused by backpressure", registry=r)
        self.send_failures = Counter(
            "lorastream_send_failures",
            "Records that could not be sent, by destination kind (reply, results, dead_letter) and outcome",
            ["destination", "outcome"],
            registry=r,
        )
        self.outbox_lanes = Gauge("lorastream_outbox_lanes", "Destination topics with records waiting", registry=r)
        self.outbox_unacked = Gauge("lorastream_outbox_unacked", "Records sent and not yet acknowledged", registry=r)
        self.commit_stalled = Gauge(
            "lorastream_commit_stalled_partitions",
            "Partitions with lag whose committed offset has not moved for commit_stall_s (/readyz is false)",
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


def adapter_label(adapter_id: str | None, resolved: bool) -> str:
    """The metric label of a request: its adapter id only once the engine resolved that id."""
    if adapter_id is None:
        return BASE_LABEL
    return adapter_id if resolved else UNRESOLVED_LABEL


class HealthServer:
    """A small HTTP/1.1 server: GET /metrics, /healthz (alive), /readyz (consuming)."""

    def __init__(self, metrics: Metrics, is_ready: Callable[[], bool], host: str, port: int) -> None:
        self._metrics = metrics
        self._is_ready = is_ready
        self._host, self._port = host, port
        self._server: asyncio.base_events.Server | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            return self._port
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self._host, self._port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request_line.decode("latin-1").split()
            path = parts[1] if len(parts) >= 2 else ""
            status, body, ctype = self._route(path)
            head = f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError) as exc:
            log.debug("health endpoint: %r", exc)
        finally:
            writer.close()

    def _route(self, path: str) -> tuple[str, bytes, str]:
        if path == "/metrics":
            return "200 OK", self._metrics.render(), CONTENT_TYPE_LATEST
        if path == "/healthz":
            return "200 OK", b"ok\n", "text/plain"
        if path == "/readyz":
            if self._is_ready():
                return "200 OK", b"ready\n", "text/plain"
            return "503 Service Unavailable", b"not ready\n", "text/plain"
        return "404 Not Found", b"not found\n", "text/plain"
