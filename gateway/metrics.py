"""The gateway's Prometheus metrics, in a registry of its own (several gateways in one test process
never collide). Labels come only from bounded sets: the route, the HTTP status, the tenant (from
the configured API keys), never from a request's `model`."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "lorastream_gateway_requests", "HTTP requests answered, by route, status code and tenant",
            ["route", "status", "tenant"], registry=r,
        )
        self.ttft_seconds = Histogram(
            "lorastream_gateway_ttft_seconds", "HTTP request received → first answer record from Kafka",
            ["route"], buckets=_SECONDS_BUCKETS, registry=r,
        )
        self.stream_seconds = Histogram(
            "lorastream_gateway_stream_seconds", "Duration of streamed answers (received → last event sent)",
            ["route", "outcome"], buckets=_SECONDS_BUCKETS, registry=r,
        )
        self.completion_tokens = Counter(
            "lorastream_gateway_completion_tokens", "Tokens answered (rate() gives tokens/s)", ["tenant"], registry=r,
        )
        self.inflight = Gauge("lorastream_gateway_inflight", "Generation requests being answered", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
