"""What a LoraClient holds open: a producer, the reader of its reply partition, the private reply
topic it created (deleted when it stops), the best-effort cancels still being published, the
route table kept current from the adapter-stats topic (streamer.routing: hot adapters spread) and
the catalogue of served bases kept current from the catalogue topic (streamer.catalogue: which
request topic serves a base).

While it owns its reply topic it writes a heartbeat there (key `HEARTBEAT_KEY`, no value) when it
creates the topic and every `heartbeat_interval_s` after: `lorastream topics gc`
(streamer/reply_topic_gc.py) deletes reply topics whose newest record is old, which is how the
topic of a client that died without closing goes away. The reply reader skips records without a
value."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError

from schemas import AdapterEvent, CancelRequest, ReplyAddress, encode
from streamer.admin import delete_topics, ensure_topics, reply_topic_spec
from streamer.catalogue import Catalogue
from streamer.config import KafkaConfig
from streamer.follower import TopicFollower
from streamer.kafka import start_producer
from streamer.model_listing import read_registry
from streamer.reply_reader import ReplyReader
from streamer.request_builder import now_ms
from streamer.reply_topic_gc import HEARTBEAT_INTERVAL_S, HEARTBEAT_KEY
from streamer.routing import RouteTable
from streamer.transport import Transport
from streamer.transport.kafka import KafkaTransport

log = logging.getLogger(__name__)

_CLOSE_TIMEOUT_S = 5.0  # for the last cancels to go out, then for the reply topic's deletion
_ROUTES_CATCH_UP_S = 2.0  # reading the stats topic's reports at start; sends go by key meanwhile
# reading the catalogue at start, and again (at most this long) before a base is declared not served
CATALOGUE_CATCH_UP_S = 0.5


class RouteFollower(TopicFollower):
    """Applies every record of the adapter-stats topic to a RouteTable."""

    name = "lorastream-route-follower"

    def __init__(self, transport: Transport, topic: str, routes: RouteTable) -> None:
        super().__init__(transport, topic, from_beginning=True)
        self.routes = routes

    def on_record(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        self.routes.apply(key, value)


class CatalogueFollower(TopicFollower):
    """Applies every record of the catalogue topic to a Catalogue."""

    name = "lorastream-catalogue-follower"

    def __init__(self, transport: Transport, topic: str, catalogue: Catalogue) -> None:
        super().__init__(transport, topic, from_beginning=True)
        self.catalogue = catalogue

    def on_record(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        self.catalogue.apply(key, value)


class ClientConnection:
    """Started and stopped as one; `owns_reply_topic`: create `reply_to.topic` on start, delete on stop;
    `catalogue_topic` None: no catalogue is followed (requests name no base)."""

    def __init__(
        self, config: KafkaConfig, reply_to: ReplyAddress, *, owns_reply_topic: bool, control_topic: str,
        stats_topic: str, catalogue_topic: str | None = None, heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
    ) -> None:
        if heartbeat_interval_s <= 0:
            raise ValueError("heartbeat_interval_s must be > 0")
        self.config = config
        self.reply_to = reply_to
        self.owns_reply_topic = owns_reply_topic
        self.control_topic = control_topic
        self.reader = ReplyReader(config, reply_to)
        self.routes = RouteTable()
        self._route_follower = RouteFollower(KafkaTransport(config), stats_topic, self.routes)
        self.catalogue = Catalogue()
        self._catalogue_follower = (
            None if catalogue_topic is None else CatalogueFollower(KafkaTransport(config), catalogue_topic, self.catalogue)
        )
        self.producer: AIOKafkaProducer | None = None
        self._made_reply_topic = False
        self._cancels: set[asyncio.Task[None]] = set()
        self.heartbeat_interval_s = heartbeat_interval_s
        self._heartbeat: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect, create the private reply topic if any, and start reading replies."""
        try:
            self.producer = await start_producer(self.config)
            if self.owns_reply_topic:
                self._made_reply_topic = True  # set first: a start cut short still deletes what it made
                await ensure_topics(self.config, [reply_topic_spec(self.reply_to.topic)])
                await self._start_heartbeat()
            await self.reader.start()
            await asyncio.gather(self._start_routes(), self._start_catalogue())
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Let the cancels still being published go out (a few seconds at most), disconnect, and
        delete the private reply topic (a bounded wait; a failure is logged, never raised)."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
            self._heartbeat = None
        if self._cancels:
            await asyncio.wait(self._cancels, timeout=_CLOSE_TIMEOUT_S)
        await self._route_follower.stop()
        if self._catalogue_follower is not None:
            await self._catalogue_follower.stop()
        await self.reader.stop()
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None
        if self._made_reply_topic:
            self._made_reply_topic = False
            try:
                await asyncio.wait_for(
                    delete_topics(self.config, [self.reply_to.topic], timeout_s=_CLOSE_TIMEOUT_S), _CLOSE_TIMEOUT_S
                )
            except Exception as exc:  # `lorastream topics gc` deletes it once its heartbeats stop
                log.warning("could not delete reply topic %s: %r", self.reply_to.topic, exc)

    async def _start_heartbeat(self) -> None:
        try:
            await self._beat()
        except TopicAuthorizationFailedError:  # ACLs that let tenants read their reply topics only
            log.warning(
                "reply topic %s: no heartbeats (this principal may not write to it), so `lorastream topics gc`"
                " cannot tell this client is alive", self.reply_to.topic,
            )
            return
        except KafkaError as exc:
            log.warning("reply topic %s: heartbeat failed: %r", self.reply_to.topic, exc)
        self._heartbeat = asyncio.create_task(self._beat_forever(), name="lorastream-reply-heartbeat")

    async def _beat(self) -> None:
        await self.producer.send_and_wait(self.reply_to.topic, None, key=HEARTBEAT_KEY, partition=self.reply_to.partition)

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            try:
                await self._beat()
            except KafkaError as exc:  # the next beat may get through; gc waits many intervals
                log.warning("reply topic %s: heartbeat failed: %r", self.reply_to.topic, exc)

    async def _start_routes(self) -> None:
        try:
            await self._route_follower.start()
            await asyncio.wait_for(self._route_follower.caught_up.wait(), _ROUTES_CATCH_UP_S)
        except (KafkaError, TimeoutError) as exc:  # without stats every request goes by its key
            log.warning("adapter stats not read (%r): requests are partitioned by key", exc)

    async def _start_catalogue(self) -> None:
        if self._catalogue_follower is None:
            return
        try:
            await self._catalogue_follower.start()
            await asyncio.wait_for(self._catalogue_follower.caught_up.wait(), CATALOGUE_CATCH_UP_S)
        except (KafkaError, TimeoutError) as exc:  # caught up later, or requests naming a base are refused
            log.warning("catalogue not read yet (%r)", exc)

    async def catalogue_caught_up(self, timeout_s: float = CATALOGUE_CATCH_UP_S) -> bool:
        """Wait (at most `timeout_s`) until the catalogue topic has been read to its end once."""
        follower = self._catalogue_follower
        if follower is None:
            return False
        try:
            await asyncio.wait_for(follower.caught_up.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def registry(self, adapters_topic: str) -> list[AdapterEvent]:
        """The adapters topic read to its end (streamer.model_listing), with the catalogue caught up."""
        registry = await read_registry(KafkaTransport(self.config), adapters_topic)
        await self.catalogue_caught_up()
        return registry

    async def lane(self, base: str) -> str | None:
        """The request topic of a live consumer of `base` (the one most of them read), or None when
        none has announced it, after waiting for the catalogue's first catch-up (a bounded wait)."""
        lanes = self.catalogue.lanes(base, now_ms())
        if not lanes and await self.catalogue_caught_up():
            lanes = self.catalogue.lanes(base, now_ms())
        return lanes[0] if lanes else None

    def cancel_in_background(self, request_id: str) -> None:
        task = asyncio.create_task(self.publish_cancel(request_id))
        self._cancels.add(task)
        task.add_done_callback(self._cancels.discard)

    async def publish_cancel(self, request_id: str) -> None:
        """Best effort: tell the service to stop working on a request nobody waits for."""
        producer = self.producer
        if producer is None:
            return
        try:
            await producer.send_and_wait(
                self.control_topic, encode(CancelRequest(request_id)), key=request_id.encode()
            )
        except KafkaError as exc:
            log.warning("could not publish cancel for %s: %r", request_id, exc)
