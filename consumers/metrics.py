"""Prometheus metrics (per-adapter labels) and the HTTP endpoint for /metrics, /healthz, /readyz.

Each service owns a `Metrics` with its own registry, so several services in one process (tests,
the demo) never collide on metric names. prometheus_client serves /metrics (content negotiation,
gzip, OpenMetrics); two plain routes beside it answer the probes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
from collections.abc import Callable
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

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
        self.reused_answers = Counter(
            "lorastream_reused_answers",
            "Re-served requests answered again from the results topic instead of being computed",
            registry=r,
        )
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
    """GET /metrics (prometheus_client's WSGI app), /healthz (alive), /readyz (consuming).

    Served by a threading WSGI server on its own thread. `is_ready` runs on the event loop that
    called `start` (where the service's state lives); a loop that does not answer within
    READY_TIMEOUT_S makes /readyz 503.
    """

    READY_TIMEOUT_S = 2.0

    def __init__(self, metrics: Metrics, is_ready: Callable[[], bool], host: str, port: int) -> None:
        self._metrics_app = make_wsgi_app(metrics.registry)
        self._is_ready = is_ready
        self._host, self._port = host, port
        self._server: ThreadingWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            return self._port
        return self._server.server_address[1]

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        server_class = _IPv6Server if ":" in self._host else ThreadingWSGIServer
        self._server = make_server(self._host, self._port, self._app, server_class, handler_class=_QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="health-http", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        if self._server is None:
            return
        await asyncio.to_thread(self._server.shutdown)
        self._server.server_close()
        self._server = None

    def _app(self, environ: dict, start_response: Callable):
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._metrics_app(environ, start_response)
        if path == "/healthz":
            return _plain(start_response, "200 OK", b"ok\n")
        if path == "/readyz":
            if self._ready():
                return _plain(start_response, "200 OK", b"ready\n")
            return _plain(start_response, "503 Service Unavailable", b"not ready\n")
        return _plain(start_response, "404 Not Found", b"not found\n")

    def _ready(self) -> bool:
        """`is_ready()` evaluated on the service's loop; False when the loop is gone or stuck."""
        answer: concurrent.futures.Future[bool] = concurrent.futures.Future()

        def ask() -> None:
            try:
                answer.set_result(bool(self._is_ready()))
            except Exception as exc:  # a broken probe reads as not ready, never as a 500
                answer.set_exception(exc)

        try:
            self._loop.call_soon_threadsafe(ask)
            return answer.result(timeout=self.READY_TIMEOUT_S)
        except Exception:
            return False


def _plain(start_response: Callable, status: str, body: bytes) -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]


class _QuietHandler(WSGIRequestHandler):
    """No access log line per probe or scrape."""

    def log_message(self, format: str, *args) -> None:
        pass


class _IPv6Server(ThreadingWSGIServer):
    address_family = socket.AF_INET6
