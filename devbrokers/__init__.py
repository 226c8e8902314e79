"""Apache Kafka for development and tests, run from the jars Maven fetched (`make kafka-jars`).

Not part of the runtime wheel: the test suite and the benchmarks use these from a source
checkout. `KafkaJarBroker` is a plaintext KRaft node; `SecuredKafkaJarBroker` adds SASL/SCRAM
users and an ACL authorizer. Both are `streamer.brokers.BrokerProcess`es (free loopback ports,
ready once a metadata request names a broker, `stop()` keeps data for a restart, `close()`
deletes it). The embedded Tansu broker the runtime uses stays in `streamer.brokers`.
"""

from devbrokers.kafka_jars import KafkaJarBroker, find_java
from devbrokers.secured import SecuredKafkaJarBroker

__all__ = ["KafkaJarBroker", "SecuredKafkaJarBroker", "find_java"]
