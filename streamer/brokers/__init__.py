"""A broker run as a child process on loopback, and the embedded one the runtime ships: Tansu.

A `BrokerProcess` picks a free loopback port, is ready only once a real Kafka metadata request
names a broker, and is killed at interpreter exit at the latest. `stop()` ends the process but
keeps its data and ports, so `start()` brings the same broker back (a restart); `close()` also
deletes the working directory. As a context manager (sync or async) it starts on enter and
closes on exit. Apache Kafka from jars, for development and tests, is in `devbrokers` (a source
checkout's package, not in the wheel).
"""

from streamer.brokers.process import BrokerProcess, free_port, probe_metadata
from streamer.brokers.tansu import TansuBroker

__all__ = [
    "BrokerProcess",
    "TansuBroker",
    "free_port",
    "probe_metadata",
]
