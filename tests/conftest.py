"""Session-wide fixtures: one real Apache Kafka per test session, fresh topic names per test.

`kafka_bootstrap` uses $LORASTREAM_BOOTSTRAP when set; otherwise it starts Apache Kafka from
$LORASTREAM_KAFKA_LIBS (or <repo>/.cache/kafka/libs, filled by `make kafka-jars`) the first time
a test asks for it, and stops it at the end. A broker that cannot start fails the tests.

The Kafka side (`devbrokers`, `streamer`: aiokafka, msgspec) is imported inside the fixtures that
use it, so `pytest tests/engine` runs where only the engine's packages are installed (the GPU
device image; tests/gpu_check/test_conftest_imports.py checks it).
"""

from __future__ import annotations

import glob
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from devbrokers import KafkaJarBroker
    from streamer import KafkaConfig, TopicNames

ROOT = Path(__file__).resolve().parents[1]

# No NVIDIA device: run the Triton kernels under Triton's CPU interpreter (tests/engine/test_engine_triton.py).
# Set before anything imports triton, which picks compiled or interpreted functions at decoration time.
if not glob.glob("/dev/nvidia[0-9]*"):
    os.environ.setdefault("TRITON_INTERPRET", "1")
_BROKER_FIXTURES = {"kafka_bootstrap", "kafka_broker", "kafka_config"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use the broker carry the `kafka` marker (select with -m kafka / not kafka)."""
    for item in items:
        if _BROKER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.kafka)


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaJarBroker]:
    """The Apache Kafka this session started; tests may stop() and start() it again."""
    if os.environ.get("LORASTREAM_BOOTSTRAP"):
        pytest.skip("LORASTREAM_BOOTSTRAP points at an external broker that tests cannot restart")
    from devbrokers import KafkaJarBroker

    libs_dir = os.environ.get("LORASTREAM_KAFKA_LIBS") or ROOT / ".cache" / "kafka" / "libs"
    broker = KafkaJarBroker(libs_dir)
    try:
        broker.start()
        yield broker
    finally:
        broker.close()


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest) -> str:
    """host:port of the broker the tests use."""
    external = os.environ.get("LORASTREAM_BOOTSTRAP")
    if external:
        return external
    return request.getfixturevalue("kafka_broker").bootstrap_servers


@pytest.fixture
def kafka_config(kafka_bootstrap: str) -> KafkaConfig:
    from streamer import KafkaConfig

    return KafkaConfig(bootstrap_servers=kafka_bootstrap, client_id="lorastream-tests")


@pytest.fixture
def topic_prefix() -> str:
    """A prefix no other test uses, so tests never share topics."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def topic_names(topic_prefix: str) -> TopicNames:
    from streamer import TopicNames

    return TopicNames(topic_prefix)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """http://127.0.0.1:PORT of a moto S3 server; any credentials are accepted."""
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.delenv("AWS_PROFILE", raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@pytest.fixture(scope="session")
def s3_client(s3_endpoint):
    import boto3

    return boto3.session.Session().client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
