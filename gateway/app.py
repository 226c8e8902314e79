"""The HTTP surface: OpenAI's routes, the API-key check, the probes and /metrics (Starlette).

    POST /v1/completions, POST /v1/chat/completions   generation (JSON or SSE)
    GET  /v1/models                                   the base and the adapters the catalogue lists
    GET  /healthz, /readyz, /metrics                  like the other lorastream processes

The app holds no state of its own beyond the requests it is streaming: the client, the catalogue
and the metrics are handed in (gateway.server builds them), so several gateways behind a load
balancer are interchangeable.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from gateway.answers import Answerer, InferenceClient, error_response
from gateway.config import GatewayConfig
from gateway.errors import ApiError, invalid, unauthorized
from gateway.metrics import GatewayMetrics
from gateway.models import ModelCatalogue
from gateway.requests import Generation, parse_chat, parse_completion

log = logging.getLogger(__name__)

ANONYMOUS_TENANT = "anonymous"  # every request's tenant when no API keys are configured
_MAX_BODY_BYTES = 4 * 2**20  # a prompt is at most schemas.limits.MAX_PROMPT_BYTES; messages add JSON


def build_app(
    config: GatewayConfig,
    client: InferenceClient,
    catalogue: ModelCatalogue,
    metrics: GatewayMetrics,
    *,
    is_ready: Callable[[], bool],
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]] | None = None,
) -> Starlette:
    answerer = Answerer(client, metrics, timeout_s=config.request_timeout_s, retry_after_s=config.retry_after_s)

    async def generate(request: Request, parse: Callable[[Any, int], Generation]) -> Response:
        route = request.url.path
        tenant = ANONYMOUS_TENANT
        try:
            tenant = _tenant(request.headers.get("authorization"), config.api_keys)
            gen = parse(await _json_body(request), config.default_max_tokens)
            base, adapter_id = catalogue.route(gen.model)
        except ApiError as exc:
            response: Response = error_response(exc, config.retry_after_s)
        else:
            if gen.user is not None:
                log.info("request for %s from tenant %s, user %r", gen.model, tenant, gen.user[:64])
            response = await answerer.answer(gen, adapter_id, tenant, route, base=base)
        metrics.requests.labels(route, str(response.status_code), tenant).inc()
        return response

    async def completions(request: Request) -> Response:
        return await generate(request, parse_completion)

    async def chat_completions(request: Request) -> Response:
        return await generate(request, parse_chat)

    async def models(request: Request) -> Response:
        try:
            tenant = _tenant(request.headers.get("authorization"), config.api_keys)
        except ApiError as exc:
            metrics.requests.labels("/v1/models", str(exc.status), ANONYMOUS_TENANT).inc()
            return error_response(exc, config.retry_after_s)
        metrics.requests.labels("/v1/models", "200", tenant).inc()
        return JSONResponse({"object": "list", "data": catalogue.listing()})

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        if is_ready():
            return PlainTextResponse("ready\n")
        return PlainTextResponse("not ready\n", status_code=503)

    async def prometheus(request: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    routes = [
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def _tenant(authorization: str | None, api_keys: Mapping[str, str]) -> str:
    """The tenant of the request's API key (`Authorization: Bearer KEY`); 401 when keys are needed."""
    if not api_keys:
        return ANONYMOUS_TENANT
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise unauthorized()
    given = key.strip().encode()
    found = None
    for known, tenant in api_keys.items():  # compare with every key, in constant time each
        if hmac.compare_digest(given, known.encode()):
            found = tenant
    if found is None:
        raise unauthorized()
    return found


async def _json_body(request: Request) -> Any:
    body = bytearray()
    async for part in request.stream():  # read no further than the limit
        body += part
        if len(body) > _MAX_BODY_BYTES:
            raise ApiError(413, f"the request body is over {_MAX_BODY_BYTES} bytes", "request_too_large")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"the request body is not JSON: {exc}") from None
