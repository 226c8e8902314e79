"""The /metrics, /healthz and /readyz endpoint, served by prometheus_client, without a broker."""

from __future__ import annotations

import asyncio
import gzip
import urllib.error
import urllib.request

from consumers.metrics import HealthServer, Metrics


def _get(port: int, path: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)


async def test_endpoints_answer_from_the_registry_and_the_ready_callable():
    metrics = Metrics()
    metrics.requests.labels(adapter="acme/a").inc(3)
    ready = False
    server = HealthServer(metrics, lambda: ready, "127.0.0.1", 0)
    await server.start()
    try:
        assert server.port > 0
        status, body, headers = await asyncio.to_thread(_get, server.port, "/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        assert 'lorastream_requests_total{adapter="acme/a"} 3.0' in body.decode()
        status, body, _ = await asyncio.to_thread(_get, server.port, "/healthz")
        assert (status, body) == (200, b"ok\n")
        status, body, _ = await asyncio.to_thread(_get, server.port, "/readyz")
        assert (status, body) == (503, b"not ready\n")
        ready = True
        status, body, _ = await asyncio.to_thread(_get, server.port, "/readyz")
        assert (status, body) == (200, b"ready\n")
        status, _, _ = await asyncio.to_thread(_get, server.port, "/nope")
        assert status == 404
    finally:
        await server.stop()


async def test_metrics_come_from_the_library_with_its_negotiation():
    """OpenMetrics and gzip: what prometheus_client's own handler gives, a hand-written one did not."""
    metrics = Metrics()
    metrics.inflight.set(2)
    server = HealthServer(metrics, lambda: True, "127.0.0.1", 0)
    await server.start()
    try:
        status, body, headers = await asyncio.to_thread(
            _get, server.port, "/metrics", {"Accept": "application/openmetrics-text", "Accept-Encoding": "gzip"}
        )
    finally:
        await server.stop()
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    text = gzip.decompress(body).decode()
    assert "lorastream_inflight 2.0" in text and text.rstrip().endswith("# EOF")


async def test_a_raising_ready_callable_reads_as_not_ready_and_stop_frees_the_port():
    def broken() -> bool:
        raise RuntimeError("probe bug")

    server = HealthServer(Metrics(), broken, "127.0.0.1", 0)
    await server.start()
    port = server.port
    status, _, _ = await asyncio.to_thread(_get, port, "/readyz")
    await server.stop()
    assert status == 503
    again = HealthServer(Metrics(), lambda: True, "127.0.0.1", port)
    await again.start()  # the port is free once stopped
    await again.stop()
