"""Development and test brokers run as child processes: Apache Kafka from jars, or Tansu.

Both pick free loopback ports, are ready only once a real Kafka metadata request names a broker,
and are killed at interpreter exit at the latest. `stop()` ends the process but keeps its data
and ports, so `start()` brings the same broker back (a restart); `close()` also deletes the
working directory. As context managers (sync or async) they start on enter and close on exit.
"""

from streamer.brokers.kafka_jars import KafkaJarBroker, find_java
from streamer.brokers.process import BrokerProcess, free_port, probe_metadata
from streamer.brokers.secured import SecuredKafkaJarBroker
from streamer.brokers.tansu import TansuBroker

__all__ = [
    "BrokerProcess",
    "KafkaJarBroker",
    "SecuredKafkaJarBroker",
    "TansuBroker",
    "find_java",
    "free_port",
    "probe_metadata",
]
