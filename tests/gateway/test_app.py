"""The HTTP layer with the real `openai` SDK over an in-process ASGI transport and a scripted client:
status codes, bodies, SSE, API keys, probes and metrics, in milliseconds (no Kafka)."""

from __future__ import annotations

import httpx2 as httpx
import openai
import pytest

from gateway.app import build_app
from gateway.config import GatewayConfig
from gateway.metrics import GatewayMetrics
from gateway.models import ModelCatalogue
from schemas import ErrorCode
from tests.gateway.fakes import FakeClient

KEY = "sk-test-0123456789"


def make(client: FakeClient, **config):
    config = GatewayConfig(base_name="tiny", **config)
    metrics = GatewayMetrics()
    app = build_app(config, client, ModelCatalogue("tiny"), metrics, is_ready=lambda: True)
    return app, metrics


def sdk(app, api_key: str = KEY) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
    return openai.AsyncOpenAI(base_url="http://gw/v1", api_key=api_key, http_client=http, max_retries=0)


async def test_completion_maps_fields_and_answers_with_usage():
    client = FakeClient()
    app, _ = make(client)
    answer = await sdk(app).completions.create(model="acme/sql", prompt="Say hi", max_tokens=3, temperature=0,
                                               stop=["\n"], seed=7)
    assert answer.choices[0].text == "Hello there!" and answer.choices[0].finish_reason == "length"
    assert answer.usage.total_tokens == 7 and answer.model == "acme/sql"
    call = client.calls[0]
    assert call["prompt"] == "Say hi" and call["adapter_id"] == "acme/sql" and "messages" not in call
    assert (call["max_new_tokens"], call["temperature"], call["stop"], call["seed"]) == (3, 0.0, ("\n",), 7)
    assert call["request_id"].startswith("anonymous:")


async def test_chat_stream_through_the_sdk():
    client = FakeClient()
    app, _ = make(client)
    stream = await sdk(app).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello there!"
    assert chunks[-1].usage.completion_tokens == 3 and [c.choices[0].finish_reason for c in chunks[:-1]][-1] == "length"
    assert client.calls[0]["adapter_id"] is None and client.calls[0]["messages"] == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("code", "exception", "status"),
    [
        (ErrorCode.ADAPTER_NOT_FOUND, openai.NotFoundError, 404),
        (ErrorCode.INVALID_REQUEST, openai.BadRequestError, 400),
        (ErrorCode.CHAT_TEMPLATE_MISSING, openai.BadRequestError, 400),
        (ErrorCode.OVERLOADED, openai.InternalServerError, 503),
        (ErrorCode.EXPIRED, openai.InternalServerError, 504),
    ],
)
async def test_service_errors_become_status_codes(code, exception, status):
    app, _ = make(FakeClient(error=code))
    with pytest.raises(exception) as info:
        await sdk(app).chat.completions.create(model="acme/x", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == status
    assert (info.value.response.headers.get("retry-after") is not None) == (status == 503)
    if code is ErrorCode.ADAPTER_NOT_FOUND:
        assert info.value.code == "model_not_found" and info.value.param == "model"


async def test_an_error_inside_a_started_stream_is_raised_by_the_sdk():
    app, _ = make(FakeClient(error=ErrorCode.INTERNAL, error_after=2))
    stream = await sdk(app).completions.create(model="tiny", prompt="p", stream=True)
    texts = []
    with pytest.raises(openai.APIError, match="scripted internal"):
        async for chunk in stream:
            texts.append(chunk.choices[0].text)
    assert texts == ["Hello", " there"]


async def test_unsupported_fields_are_refused_before_anything_is_sent():
    client = FakeClient()
    app, _ = make(client)
    with pytest.raises(openai.BadRequestError) as info:
        await sdk(app).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], logprobs=True)
    assert info.value.param == "logprobs"
    with pytest.raises(openai.BadRequestError):
        await sdk(app).completions.create(model="tiny", prompt="x", n=2)
    with pytest.raises(openai.NotFoundError):
        await sdk(app).completions.create(model="../nope", prompt="x")
    assert client.calls == []


async def test_api_keys_name_the_tenant_and_refuse_strangers():
    client = FakeClient()
    app, metrics = make(client, api_keys={KEY: "team-a"})
    await sdk(app).completions.create(model="tiny", prompt="x")
    assert client.calls[0]["request_id"].startswith("team-a:")
    with pytest.raises(openai.AuthenticationError):
        await sdk(app, api_key="sk-wrong-key-000").completions.create(model="tiny", prompt="x")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
        missing = await http.post("/v1/completions", json={"model": "tiny", "prompt": "x"})
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        await sdk(app, api_key="sk-wrong-key-000").models.list()
    assert len(client.calls) == 1
    text = metrics.render().decode()
    assert 'lorastream_gateway_requests_total{route="/v1/completions",status="200",tenant="team-a"} 1.0' in text
    assert 'status="401"' in text


async def test_models_probes_and_metrics():
    app, _ = make(FakeClient())
    listed = await sdk(app).models.list()
    assert [m.id for m in listed.data] == ["tiny"]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/readyz")).status_code == 200
        bad = await http.post("/v1/completions", content=b"{not json")
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
        await http.post("/v1/completions", json={"model": "tiny", "prompt": "x", "stream": True})
        metrics = (await http.get("/metrics")).text
    assert 'lorastream_gateway_stream_seconds_count{outcome="finished",route="/v1/completions"} 1.0' in metrics
    assert "lorastream_gateway_completion_tokens_total" in metrics


async def test_not_ready_is_503():
    config = GatewayConfig()
    app = build_app(config, FakeClient(), ModelCatalogue("base"), GatewayMetrics(), is_ready=lambda: False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
        assert (await http.get("/readyz")).status_code == 503


async def test_a_model_of_another_base_is_sent_to_that_base():
    """`<base>:<adapter>` for a base other than the gateway's own reaches LoraClient as `base=`;
    the gateway's own base sends none (its default topic), as before."""
    client = FakeClient()
    app, _ = make(client)
    for model in ("qwen-tiny:acme/sql", "tiny:acme/sql", "acme/sql"):
        await sdk(app).completions.create(model=model, prompt="Say hi", max_tokens=3)
    assert [(c["adapter_id"], c.get("base")) for c in client.calls] == [
        ("acme/sql", "qwen-tiny"), ("acme/sql", None), ("acme/sql", None),
    ]  # fmt: skip


async def test_a_base_nobody_serves_is_a_404_at_once():
    app, _ = make(FakeClient(error=ErrorCode.BASE_NOT_SERVED))
    with pytest.raises(openai.NotFoundError) as info:
        await sdk(app).completions.create(model="qwen-tiny:acme/x", prompt="p", max_tokens=2)
    assert info.value.code == "base_not_served"
