"""The secured broker's settings (no broker started): opt-in, complete, and validated; the
default KafkaJarBroker keeps its plaintext listeners and formats storage as before."""

from __future__ import annotations

import pytest

from devbrokers import KafkaJarBroker
from devbrokers.secured import ADMIN_USER, STANDARD_AUTHORIZER, SecuredKafkaJarBroker


@pytest.fixture
def libs_dir(tmp_path):
    (tmp_path / "kafka_2.13-4.1.1.jar").touch()
    return tmp_path


@pytest.fixture
def made():
    brokers = []
    yield brokers.append
    for broker in brokers:
        broker.close()


def test_default_broker_is_plaintext_without_authorizer(libs_dir, made):
    broker = KafkaJarBroker(libs_dir, port=9001, controller_port=9002)
    made(broker)
    props = broker._properties()
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9001,CONTROLLER://127.0.0.1:9002"
    assert props["listener.security.protocol.map"] == "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    assert not any(k.startswith(("sasl", "authorizer", "super.users")) for k in props)
    assert broker._format_options() == [] and broker.client_kwargs() == {}


def test_secured_broker_settings(libs_dir, made):
    broker = SecuredKafkaJarBroker(libs_dir, users={"alice": "pw-a", "svc": "pw-s"}, admin_password="pw-admin")
    made(broker)
    props = broker._properties()
    assert props["authorizer.class.name"] == STANDARD_AUTHORIZER
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == f"User:{ADMIN_USER};User:controller"
    assert props["listener.security.protocol.map"] == "CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT"
    assert broker._format_options() == [
        "--add-scram", "SCRAM-SHA-256=[name=admin,password=pw-admin]",
        "--add-scram", "SCRAM-SHA-256=[name=alice,password=pw-a]",
        "--add-scram", "SCRAM-SHA-256=[name=svc,password=pw-s]",
    ]  # fmt: skip
    assert broker.client_kwargs()["sasl_plain_username"] == ADMIN_USER
    alice = broker.kafka_config("alice", client_id="x")
    assert (alice.security_protocol, alice.sasl_plain_username, alice.client_id) == ("SASL_PLAINTEXT", "alice", "x")


def test_extra_properties_still_win(libs_dir, made):
    broker = SecuredKafkaJarBroker(libs_dir, users={}, extra_properties={"allow.everyone.if.no.acl.found": "true"})
    made(broker)
    assert broker._properties()["allow.everyone.if.no.acl.found"] == "true"


@pytest.mark.parametrize(
    ("users", "message"),
    [
        ({"admin": "pw"}, "super user"),
        ({"al ice": "pw"}, "names and passwords"),
        ({"alice": "p,w]"}, "names and passwords"),
        ({"alice": ""}, "names and passwords"),
    ],
)
def test_secured_broker_refuses_bad_credentials(libs_dir, users, message):
    with pytest.raises(ValueError, match=message):
        SecuredKafkaJarBroker(libs_dir, users=users)


def test_kafka_config_only_for_known_users(libs_dir, made):
    broker = SecuredKafkaJarBroker(libs_dir, users={"alice": "pw"})
    made(broker)
    with pytest.raises(ValueError, match="no user"):
        broker.kafka_config("mallory")
