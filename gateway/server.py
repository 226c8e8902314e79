"""One gateway process: a LoraClient (its private reply topic), the adapters catalogue, the app.

`Gateway` starts and stops them as one (the app's lifespan); `serve` runs it under uvicorn until
interrupted. Ready once the client is connected and the adapters topic has been read whole (or
`adapters_wait_s` passed: a gateway in front of a fleet whose topics are not created yet still
answers, and lists what arrives later).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette

from gateway.app import build_app
from gateway.config import GatewayConfig
from gateway.metrics import GatewayMetrics
from gateway.models import AdaptersFollower, ModelCatalogue
from streamer.client import LoraClient
from streamer.config import KafkaConfig, TopicNames
from streamer.transport.kafka import KafkaTransport

log = logging.getLogger(__name__)

_FOLLOW_RETRY_S = 2.0  # the adapters topic could not be read: try again after this long


class Gateway:
    def __init__(self, config: GatewayConfig, kafka: KafkaConfig, topics: TopicNames) -> None:
        self.config = config
        self.client = LoraClient(
            config=kafka, topics=topics, client_id=config.client_id(), request_timeout_s=config.request_timeout_s
        )
        self.catalogue = ModelCatalogue(config.base_name)
        self.metrics = GatewayMetrics()
        self._follower = AdaptersFollower(KafkaTransport(kafka), topics.adapters, self.catalogue)
        self._following: asyncio.Task[None] | None = None
        self._is_started = False
        self._adapters_settled = asyncio.Event()
        self.app: Starlette = build_app(
            config, self.client, self.catalogue, self.metrics, is_ready=self.is_ready, lifespan=self._lifespan
        )

    def is_ready(self) -> bool:
        return self._is_started and self._adapters_settled.is_set()

    async def start(self) -> None:
        await self.client.start()
        self._following = asyncio.create_task(self._follow(), name="gateway-adapters")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._follower.caught_up.wait(), self.config.adapters_wait_s)
        self._adapters_settled.set()
        self._is_started = True

    async def stop(self) -> None:
        self._is_started = False
        if self._following is not None:
            self._following.cancel()
            await asyncio.gather(self._following, return_exceptions=True)
        await self._follower.stop()
        await self.client.close()

    async def _follow(self) -> None:
        while True:
            try:
                await self._follower.start()
                return
            except Exception as exc:  # the topic may not exist yet
                log.warning("cannot read the adapters topic yet (%r); retrying", exc)
                await asyncio.sleep(_FOLLOW_RETRY_S)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()


def uvicorn_server(gateway: Gateway, *, log_level: str = "warning") -> uvicorn.Server:
    """A uvicorn server for the gateway's app (port 0: any free port; see `bound_port`)."""
    config = uvicorn.Config(
        gateway.app, host=gateway.config.host, port=gateway.config.port, lifespan="on",
        log_level=log_level, access_log=False, loop="none",
    )
    return uvicorn.Server(config)


def bound_port(server: uvicorn.Server) -> int:
    return server.servers[0].sockets[0].getsockname()[1]


async def serve(config: GatewayConfig, kafka: KafkaConfig, topics: TopicNames) -> None:
    """Run a gateway until interrupted (SIGINT/SIGTERM end it; uvicorn handles them)."""
    server = uvicorn_server(Gateway(config, kafka, topics), log_level="info")
    await server.serve()
