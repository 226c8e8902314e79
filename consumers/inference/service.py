"""The inference consumer: requests in through a transport, engine work off the event loop, answers out.

This module only wires the parts, each of which owns one concern:
- intake.py — the group member: poll loop, backpressure, commits, commit watchdog, rebalances;
- admission.py — a record becomes a running answer, or is refused and dead-lettered;
- answer_memory.py — which re-served requests already have their answer on the results topic;
- translate.py — schema ↔ engine: requests to GenerationRequests, engine events to answer records;
- answer_writer.py — chunks, the last record and the results copy through the per-destination
  outbox; an offset is finished once its results copy (or dead letter) is acknowledged;
- catalogue_publisher.py — what it serves, announced on the catalogue topic (streamer.catalogue).
A consumer serves one base (the engine's base name): with `base_lane` it reads that base's own
topic in its own group, else the default requests topic; a request naming another base is
answered `base_not_served` and not computed.
Everything Kafka-shaped goes through `streamer.transport.Transport`: `KafkaTransport` in
production, `MemoryTransport` in the scenario tests (tests/consumers/scenarios/).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from consumers.config import ServeConfig
from consumers.inference.admission import Admission, EngineHandle
from consumers.inference.answer import Answer
from consumers.inference.answer_memory import AnswerMemory
from consumers.inference.answer_writer import AnswerWriter
from consumers.inference.cache_metrics import CacheCollector
from consumers.inference.catalogue_publisher import CataloguePublisher, Lane, served_base_name
from consumers.inference.intake import Intake
from consumers.inference.traffic_stats import consumer_key, publishing_traffic
from consumers.inference.adapters_topic import AdaptersTopicFollower
from consumers.metrics import HealthServer, Metrics
from streamer import TopicNames, TopicSpec, default_topic_specs
from streamer.control import ControlListener
from streamer.outbox import Outbox
from streamer.reply_topics import ReplyPolicy, ReplyTopicDirectory
from streamer.transport import Admin, TopicPartition, Transport

log = logging.getLogger(__name__)

ANSWER_LINGER_MS = 2
CLOSE_TIMEOUT_S = 10.0


class InferenceService:
    def __init__(self, transport: Transport, topics: TopicNames, config: ServeConfig, engine: EngineHandle) -> None:
        self.transport = transport
        self.topics = topics
        self.config = config
        self.engine = engine
        self.base_name = served_base_name(engine)
        self.lane = Lane(config.requests_topic(topics, self.base_name), config.consumer_group(self.base_name))
        self.answers: dict[str, Answer] = {}  # request_id → the answer in flight
        self.ready = asyncio.Event()
        self.metrics = Metrics()
        cache_stats = getattr(engine, "cache_stats", None)
        if cache_stats is not None:
            self.metrics.registry.register(CacheCollector(cache_stats.snapshot))
        service_topics = [spec.name for spec in default_topic_specs(topics)] + [self.lane.topic]
        self.reply_policy = ReplyPolicy(config.reply_pattern(topics.prefix), service_topics)
        self.memory = AnswerMemory(transport, topics.results, config)
        self.intake = Intake(transport, self.lane.topic, self.lane.group_id, config, self.metrics, self.memory)
        self.admission: Admission | None = None
        self.adapters_topic: AdaptersTopicFollower | None = None
        self.health: HealthServer | None = None
        self._writer: AnswerWriter | None = None
        self._stopping = asyncio.Event()

    @property
    def stalled_partitions(self) -> list[TopicPartition]:
        return self.intake.stalled_partitions

    @property
    def chunks_per_reply_record(self) -> float:
        """TokenChunks per reply record sent for requests that accept ChunkBatch records (1.0: none packed)."""
        batcher = self._writer.batcher if self._writer is not None else None
        return batcher.chunks_sent / batcher.records_sent if batcher is not None and batcher.records_sent else 1.0

    def is_ready(self) -> bool:
        """Consuming, and no partition's commit is stalled behind lag."""
        return self.ready.is_set() and not self.stalled_partitions

    def stop(self) -> None:
        """Stop intake; `run` drains in-flight requests, commits, and returns."""
        self._stopping.set()

    async def run(self) -> None:
        specs = default_topic_specs(self.topics, request_partitions=self.config.request_partitions)
        if self.lane.topic != self.topics.requests:
            specs.append(TopicSpec(self.lane.topic, self.config.request_partitions))
        await self.transport.ensure_topics(specs)
        async with self.transport.admin() as admin, publishing_traffic(self), self._announcing():
            await self._run(admin)

    def _announcing(self) -> CataloguePublisher | contextlib.nullcontext:
        if self.base_name is None:
            log.warning("the engine's base has no name the wire accepts: not announced in the catalogue")
            return contextlib.nullcontext()
        return CataloguePublisher(
            self.transport, self.topics.catalogue, consumer_key(self.config.served_by), self.lane, self.engine,
            self.base_name, self.config.catalogue_interval_s,
        )

    async def _run(self, admin: Admin) -> None:
        config, intake = self.config, self.intake
        producer = self.transport.producer(linger_ms=ANSWER_LINGER_MS)
        outbox = Outbox(producer, config.send_retry)
        directory = ReplyTopicDirectory(admin.describe_topic)
        self._writer = writer = AnswerWriter(
            outbox=outbox, loop=asyncio.get_running_loop(), topics=self.topics, config=config, metrics=self.metrics,
            directory=directory, lookup=self.answers.get, abort=self.engine.abort,
            settled=lambda answer: admission.settled(answer),  # admission is made next: it writes through writer
        )
        self.admission = admission = Admission(
            engine=self.engine, writer=writer, answers=self.answers, epochs=intake.epochs, finish=intake.finish,
            reply_policy=self.reply_policy, directory=directory, metrics=self.metrics, served_by=config.served_by,
            memory=self.memory, outbox=outbox, served_base=self.base_name,
        )
        control = ControlListener(self.transport, self.topics.control, on_cancel_request=admission.cancel)
        if hasattr(self.engine, "register_adapter"):
            self.adapters_topic = AdaptersTopicFollower(self.transport, self.topics.adapters, self.engine)
        await producer.start()
        self.engine.start()
        if self.adapters_topic is not None:
            await self.adapters_topic.start()
            try:  # answer with the registered versions from the first request on
                await asyncio.wait_for(self.adapters_topic.caught_up.wait(), config.registry_catch_up_s)
            except TimeoutError:
                log.warning("adapters topic not replayed within %.0f s; serving meanwhile", config.registry_catch_up_s)
        await intake.consumer.start()
        await control.start()
        if config.metrics_port is not None:
            self.health = HealthServer(self.metrics, self.is_ready, config.metrics_host, config.metrics_port)
            await self.health.start()

        def gauges() -> None:
            self.metrics.outbox_lanes.set(outbox.num_lanes)
            self.metrics.outbox_unacked.set(outbox.num_unacked)

        try:
            await intake.run(
                admit=admission.admit, num_inflight=lambda: admission.num_inflight,
                ready=self.ready, stopping=self._stopping, on_round=gauges,
            )
            await self._drain(admission, outbox)
            await intake.commit()
        finally:
            admission.close()
            if self.health is not None:
                await self.health.stop()
            await control.stop()
            if self.adapters_topic is not None:
                await self.adapters_topic.stop()
            await intake.consumer.stop()
            await self.memory.close()
            await outbox.close(timeout_s=CLOSE_TIMEOUT_S)
            await producer.stop()
            self.engine.stop(timeout_s=CLOSE_TIMEOUT_S)

    async def _drain(self, admission: Admission, outbox: Outbox) -> None:
        """Let in-flight answers finish (up to shutdown_drain_s), abort the rest, flush the outbox."""
        try:
            await asyncio.wait_for(admission.wait_idle(), self.config.shutdown_drain_s)
        except TimeoutError:
            log.warning("%d answers unfinished after %.1f s; aborting them", len(self.answers), self.config.shutdown_drain_s)
        admission.abort_all()
        await outbox.close(timeout_s=5.0)
