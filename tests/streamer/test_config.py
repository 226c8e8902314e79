"""KafkaConfig and TopicNames: validation, environment, aiokafka keyword arguments."""

from __future__ import annotations

import ssl

import pytest

from streamer import KafkaConfig, TopicNames

INVALID = {
    "empty bootstrap": dict(bootstrap_servers=" "),
    "empty client id": dict(bootstrap_servers="h:1", client_id=""),
    "unknown protocol": dict(bootstrap_servers="h:1", security_protocol="TLS"),
    "sasl without mechanism": dict(bootstrap_servers="h:1", security_protocol="SASL_SSL"),
    "sasl without password": dict(
        bootstrap_servers="h:1",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_plain_username="u",
    ),
    "unsupported mechanism": dict(
        bootstrap_servers="h:1",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="GSSAPI",
        sasl_plain_username="u",
        sasl_plain_password="p",
    ),
    "mechanism without sasl": dict(bootstrap_servers="h:1", sasl_mechanism="PLAIN"),
    "ssl files on plaintext": dict(bootstrap_servers="h:1", ssl_cafile="/ca.pem"),
    "key without cert": dict(
        bootstrap_servers="h:1", security_protocol="SSL", ssl_keyfile="/key.pem"
    ),
    "negative fetch wait": dict(bootstrap_servers="h:1", fetch_max_wait_ms=-1),
}


@pytest.mark.parametrize("kwargs", INVALID.values(), ids=INVALID.keys())
def test_invalid_config_raises_value_error(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        KafkaConfig(**kwargs)


def test_plaintext_kwargs() -> None:
    kwargs = KafkaConfig("127.0.0.1:9092", client_id="me").aiokafka_kwargs()
    assert kwargs == {
        "bootstrap_servers": "127.0.0.1:9092",
        "client_id": "me",
        "security_protocol": "PLAINTEXT",
    }


def test_sasl_ssl_kwargs_build_an_ssl_context() -> None:
    cfg = KafkaConfig(
        "broker:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username="svc",
        sasl_plain_password="secret",
    )
    kwargs = cfg.aiokafka_kwargs()
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "svc"
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    assert "secret" not in repr(cfg)


def test_from_env() -> None:
    env = {
        "LORASTREAM_BOOTSTRAP": "k1:9092,k2:9092",
        "LORASTREAM_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "LORASTREAM_SASL_MECHANISM": "PLAIN",
        "LORASTREAM_SASL_USERNAME": "u",
        "LORASTREAM_SASL_PASSWORD": "p",
    }
    cfg = KafkaConfig.from_env(env=env)
    assert cfg.bootstrap_servers == "k1:9092,k2:9092"
    assert (cfg.sasl_mechanism, cfg.sasl_plain_username, cfg.sasl_plain_password) == (
        "PLAIN",
        "u",
        "p",
    )
    assert KafkaConfig.from_env("other:1", env=env).bootstrap_servers == "other:1"
    assert KafkaConfig.from_env(env={}).bootstrap_servers == "127.0.0.1:9092"


def test_fetch_max_wait_defaults_low_and_comes_from_the_environment() -> None:
    assert KafkaConfig("h:1").fetch_max_wait_ms == KafkaConfig.from_env(env={}).fetch_max_wait_ms == 5
    env = {"LORASTREAM_FETCH_MAX_WAIT_MS": "500"}
    assert KafkaConfig.from_env(env=env).fetch_max_wait_ms == 500
    assert "fetch_max_wait_ms" not in KafkaConfig("h:1").aiokafka_kwargs()  # consumers only


def test_topic_names() -> None:
    names = TopicNames()
    assert names.requests == "lorastream.requests"
    assert names.requests_dlq == "lorastream.requests.dlq"
    assert names.results == "lorastream.results"
    assert names.control == "lorastream.control"
    assert names.training_requests == "lorastream.training.requests"
    assert names.training_events == "lorastream.training.events"
    assert names.adapters == "lorastream.adapters"
    assert names.replies_for("c1") == "lorastream.replies.c1"
    assert TopicNames("acme-prod").requests == "acme-prod.requests"


@pytest.mark.parametrize("prefix", ["", "has space", "slash/no", "x" * 121])
def test_topic_prefix_is_validated(prefix: str) -> None:
    with pytest.raises(ValueError):
        TopicNames(prefix)


@pytest.mark.parametrize("client_id", ["", "a b", "ü"])
def test_reply_topic_client_id_is_validated(client_id: str) -> None:
    with pytest.raises(ValueError):
        TopicNames().replies_for(client_id)
