"""Kafka plumbing and the async client of lorastream.

Imports schemas and aiokafka only (never torch): `LoraClient` (stream, generate, submit), reply
routing and deduplication, producer/consumer helpers, topic admin, offset tracking, and the
embedded Tansu broker launcher (Apache Kafka for development and tests is in `devbrokers`).
"""

from streamer.admin import (
    TopicInfo,
    TopicSpec,
    default_topic_specs,
    delete_topics,
    describe_topics,
    ensure_topics,
    list_topics,
    reply_topic_spec,
    topic_configs,
)
from streamer.brokers import BrokerProcess, TansuBroker
from streamer.client import BASE_MODEL_KEY, LoraClient, RequestOptions
from streamer.config import KafkaConfig, TopicNames
from streamer.errors import (
    BrokerError,
    ClientClosed,
    PublishFailed,
    RequestFailed,
    RequestTimeout,
    TopicAdminError,
)
from streamer.kafka import make_consumer, make_producer, start_consumer, start_producer
from streamer.offsets import OffsetTracker, PartitionOffsets
from streamer.retry import RetryPolicy, is_transient, retry_transient
from streamer.replies import ReplyDedup, ReplyDemux
from streamer.stream import RequestStream
from streamer.training_client import (
    TrainingJob,
    build_training_request,
    follow_training,
    submit_training,
)

__all__ = [
    "BASE_MODEL_KEY",
    "BrokerError",
    "BrokerProcess",
    "ClientClosed",
    "KafkaConfig",
    "LoraClient",
    "OffsetTracker",
    "PartitionOffsets",
    "PublishFailed",
    "ReplyDedup",
    "ReplyDemux",
    "RequestFailed",
    "RequestOptions",
    "RequestStream",
    "RequestTimeout",
    "TansuBroker",
    "TopicAdminError",
    "TrainingJob",
    "build_training_request",
    "follow_training",
    "submit_training",
    "TopicInfo",
    "TopicNames",
    "TopicSpec",
    "default_topic_specs",
    "delete_topics",
    "describe_topics",
    "ensure_topics",
    "is_transient",
    "list_topics",
    "make_consumer",
    "make_producer",
    "reply_topic_spec",
    "retry_transient",
    "RetryPolicy",
    "start_consumer",
    "start_producer",
    "topic_configs",
]
