"""The seam between the services and Kafka: a few small interfaces, two implementations.

`KafkaTransport` (streamer/transport/kafka.py) wraps aiokafka; `MemoryTransport`
(streamer/transport/memory.py) keeps topics, partitions, a consumer group and committed offsets
in one process, so a whole service (poll, answer, commit, rebalance) is driven by unit tests in
milliseconds. The same scenarios also run against Apache Kafka in the integration suite.

Everything a service does with Kafka goes through these; nothing else in `consumers/` imports
aiokafka.
"""

from streamer.transport.protocol import (
    Admin,
    GroupConsumer,
    OffsetAndMetadata,
    PartitionReader,
    Producer,
    RebalanceListener,
    Record,
    TopicPartition,
    Transport,
)

__all__ = [
    "Admin",
    "GroupConsumer",
    "OffsetAndMetadata",
    "PartitionReader",
    "Producer",
    "RebalanceListener",
    "Record",
    "TopicPartition",
    "Transport",
]
