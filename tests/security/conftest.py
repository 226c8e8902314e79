"""Apache Kafka with SASL/SCRAM and the StandardAuthorizer, started once for tests/security, and
the deployment's ACLs (streamer.acls) applied to one topic prefix.

Principals: the inference service, the training worker, an operator, a release operator
("release-bot"), tenant "alice" (may fine-tune) and tenant "bob"; "carol" has a reply topic but is
no tenant the service answers.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streamer import KafkaConfig, TopicNames, TopicSpec, default_topic_specs, ensure_topics
from streamer.acls import Principals, Tenant, create_acls, lorastream_acls, reply_prefix
from devbrokers.secured import ADMIN_USER, SecuredKafkaJarBroker
from tests.integration.conftest import tiny_model  # noqa: F401  (re-exported fixture)

ROOT = Path(__file__).resolve().parents[2]
PRINCIPALS = Principals(
    operators=("ops",), tenants=(Tenant("alice", may_train=True), Tenant("bob")), release_operators=("release-bot",)
)
OUTSIDER = "carol"  # a reply-topic prefix no tenant of PRINCIPALS owns


@dataclass(frozen=True)
class SecuredDeployment:
    """The secured broker, the topic names its ACLs cover, and who is who."""

    broker: SecuredKafkaJarBroker
    topics: TopicNames
    principals: Principals

    def config(self, user: str) -> KafkaConfig:
        return self.broker.kafka_config(user, client_id=f"sec-{user}")

    @property
    def admin(self) -> KafkaConfig:
        return self.config(ADMIN_USER)

    def reply_topic(self, tenant: str) -> str:
        """A fresh reply-topic name under `tenant`'s prefix (not created)."""
        return f"{reply_prefix(self.topics, tenant)}{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="package")
def secured_broker() -> Iterator[SecuredKafkaJarBroker]:
    libs_dir = os.environ.get("LORASTREAM_KAFKA_LIBS") or ROOT / ".cache" / "kafka" / "libs"
    p = PRINCIPALS
    users = [p.inference, p.trainer, *p.operators, *p.release_operators, *(t.name for t in p.tenants), OUTSIDER]
    broker = SecuredKafkaJarBroker(libs_dir, users={u: secrets.token_hex(12) for u in users})
    try:
        broker.start()
        yield broker
    finally:
        broker.close()


@pytest.fixture(scope="module")
async def secured(secured_broker) -> SecuredDeployment:
    """The deployment's ACLs in force on a fresh prefix (one per test module) whose shared topics exist."""
    deployment = SecuredDeployment(secured_broker, TopicNames(f"sec-{uuid.uuid4().hex[:8]}"), PRINCIPALS)
    await create_acls(deployment.admin, lorastream_acls(deployment.topics, deployment.principals))
    await ensure_topics(deployment.admin, default_topic_specs(deployment.topics, request_partitions=2))
    return deployment


async def make_topic(deployment: SecuredDeployment, name: str) -> str:
    await ensure_topics(deployment.admin, [TopicSpec(name)])
    return name


_COUNTS: list[str] = []


@pytest.fixture(scope="package")
def report_counts():
    """Record a line of counts, printed in the session summary under "security counts"."""
    return _COUNTS.append


def pytest_terminal_summary(terminalreporter) -> None:
    if _COUNTS:
        terminalreporter.section("security counts")
        for line in _COUNTS:
            terminalreporter.write_line(line)
