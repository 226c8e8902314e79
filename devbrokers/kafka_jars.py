"""Apache Kafka (KRaft, one node) run from the jars Maven fetched; Java 17+ needed."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import uuid
from pathlib import Path

from streamer.brokers.process import BrokerProcess, free_port
from streamer.errors import BrokerError


def find_java() -> str:
    """The java executable: $JAVA_HOME/bin/java, else `java` on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise BrokerError("java not found: set JAVA_HOME or put java (17+) on PATH")
    return found


class KafkaJarBroker(BrokerProcess):
    """Apache Kafka in KRaft mode (one combined broker + controller) from a folder of jars.

    `libs_dir` defaults to $LORASTREAM_KAFKA_LIBS (`make kafka-jars` fills .cache/kafka/libs).
    Topics are not auto-created unless `auto_create_topics`: code must create what it uses.
    """

    kind = "kafka"

    def __init__(
        self,
        libs_dir: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        controller_port: int | None = None,
        heap_mb: int = 512,
        auto_create_topics: bool = False,
        extra_properties: dict[str, str] | None = None,
        startup_timeout_s: float = 90.0,
    ) -> None:
        libs = libs_dir or os.environ.get("LORASTREAM_KAFKA_LIBS")
        if not libs:
            raise BrokerError("no Kafka jars folder: pass libs_dir or set LORASTREAM_KAFKA_LIBS")
        self.libs_dir = Path(libs).resolve()
        if not any(self.libs_dir.glob("kafka_2.13-*.jar")):
            raise BrokerError(
                f"no kafka_2.13-*.jar in {self.libs_dir}: run `make kafka-jars` "
                "(Maven fetches org.apache.kafka:kafka_2.13 and its runtime dependencies)"
            )
        if heap_mb < 128:
            raise ValueError("heap_mb must be >= 128")
        self.java = find_java()
        self.heap_mb = heap_mb
        self.auto_create_topics = auto_create_topics
        self.extra_properties = dict(extra_properties or {})
        super().__init__(port=port, startup_timeout_s=startup_timeout_s)
        self.controller_port = controller_port or free_port()

    def _classpath(self) -> str:
        return f"{self.libs_dir}/*"

    def _properties(self) -> dict[str, str]:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            **self._listener_properties(),
            "log.dirs": str(self.workdir / "data"),
            "num.partitions": "1",
            "auto.create.topics.enable": str(self.auto_create_topics).lower(),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "4",
        }
        props.update(self.extra_properties)
        return props

    def _listener_properties(self) -> dict[str, str]:
        """Listeners and how they authenticate: plaintext, no authentication, no authorizer."""
        return {
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        }

    def _format_options(self) -> list[str]:
        """Extra `StorageTool format` options (credentials written into the metadata log)."""
        return []

    def _prepare(self) -> None:
        config = self.workdir / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in self._properties().items()))
        (self.workdir / "log4j2.properties").write_text(_LOG4J2_PROPERTIES)
        cluster_id = _cluster_id()
        fmt = subprocess.run(
            [
                self.java,
                "-Xmx256m",
                *_TOOL_JVM_OPTS,
                *self._log_opts(),
                "-cp",
                self._classpath(),
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(config),
                *self._format_options(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if fmt.returncode != 0:
            raise BrokerError(f"kafka storage format failed:\n{fmt.stdout}\n{fmt.stderr}")

    def _log_opts(self) -> list[str]:
        return [
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.workdir / 'logs'}",
        ]

    def _command(self) -> list[str]:
        return [
            self.java,
            f"-Xmx{self.heap_mb}m",
            f"-Xms{min(self.heap_mb, 256)}m",
            "-XX:+UseSerialGC",
            *self._log_opts(),
            "-Djava.awt.headless=true",
            "-cp",
            self._classpath(),
            "kafka.Kafka",
            str(self.workdir / "server.properties"),
        ]


_TOOL_JVM_OPTS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")  # a short-lived tool: start fast

_LOG4J2_PROPERTIES = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
"""


def _cluster_id() -> str:
    """A random base64 cluster id that does not start with "-" (the tool would read an option)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id
