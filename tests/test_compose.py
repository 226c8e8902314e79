"""The production compose stack: it validates (Debian's docker-compose checks it without an
engine), and it runs Kafka secured as docs/security.md says — SASL/SCRAM principals, the
StandardAuthorizer with the same settings as the test suite's secured broker, one principal per
service, every one of them created, and the ACL set of streamer.acls applied before anything
else connects."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from streamer.acls import Principals, main as acls_main
from devbrokers.secured import ADMIN_USER, SecuredKafkaJarBroker

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "compose"
LORASTREAM_SERVICES = ("acls", "topics", "inference", "train-worker")
# settings that carry no address or password: the compose broker and the test broker must agree
SHARED_SECURITY_KEYS = (
    "controller.listener.names",
    "inter.broker.listener.name",
    "listener.security.protocol.map",
    "sasl.enabled.mechanisms",
    "sasl.mechanism.inter.broker.protocol",
    "sasl.mechanism.controller.protocol",
    "listener.name.controller.sasl.enabled.mechanisms",
    "authorizer.class.name",
    "super.users",
    "allow.everyone.if.no.acl.found",
)


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())["services"]


def _flag(command: list[str], name: str) -> str | None:
    return command[command.index(name) + 1] if name in command else None


def _principal(service: dict) -> str:
    """The SASL user a lorastream service connects as (flag, else environment)."""
    return _flag(service.get("command", []), "--sasl-username") or service["environment"]["LORASTREAM_SASL_USERNAME"]


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose command not installed")
def test_compose_file_validates():
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_grafana_dashboard_has_per_adapter_panels():
    dashboard = json.loads((COMPOSE / "grafana" / "dashboards" / "lorastream.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert sum("by (adapter" in e for e in exprs) >= 4
    assert dashboard["templating"]["list"][0]["name"] == "adapter"


def test_kafka_runs_the_test_brokers_security_settings(services, tmp_path):
    assert services["kafka"]["entrypoint"] == ["/bin/sh", "/opt/lorastream/start.sh"]
    script = (COMPOSE / "kafka" / "start.sh").read_text()
    heredoc = script.split("<<PROPERTIES\n")[1].split("\nPROPERTIES\n")[0]
    compose_props = dict(line.split("=", 1) for line in heredoc.splitlines())
    (tmp_path / "kafka_2.13-4.1.1.jar").touch()
    broker = SecuredKafkaJarBroker(tmp_path, users={})
    try:
        test_props = broker._properties()
    finally:
        broker.close()
    assert {k: compose_props.get(k) for k in SHARED_SECURITY_KEYS} == {k: test_props[k] for k in SHARED_SECURITY_KEYS}
    assert 'username="admin"' in compose_props["listener.name.client.scram-sha-256.sasl.jaas.config"]
    assert "--add-scram" in script and "name=admin" in script


def test_each_lorastream_service_is_its_own_principal(services):
    defaults = Principals()
    users = {name: _principal(services[name]) for name in LORASTREAM_SERVICES}
    assert users == {"acls": ADMIN_USER, "topics": "ops", "inference": defaults.inference, "train-worker": defaults.trainer}
    for name in LORASTREAM_SERVICES:
        env = services[name]["environment"]
        command = services[name].get("command", [])
        assert env["LORASTREAM_SASL_PASSWORD"], name
        assert (_flag(command, "--security-protocol") or env["LORASTREAM_SECURITY_PROTOCOL"]).startswith("SASL_"), name
        assert (_flag(command, "--sasl-mechanism") or env["LORASTREAM_SASL_MECHANISM"]) == "SCRAM-SHA-256", name


def test_acls_are_created_before_any_service_connects(services):
    acls = services["acls"]
    assert acls["entrypoint"] == ["python", "-m", "streamer.acls"] and "--apply" in acls["command"]
    order = {"acls": "kafka-users", "topics": "acls", "inference": "topics", "train-worker": "topics"}
    for service, first in order.items():
        assert services[service]["depends_on"][first] == {"condition": "service_completed_successfully"}, service


def test_every_principal_has_a_scram_user(services, capsys):
    """kafka-users creates each user a service connects as and each one the ACLs name."""
    created = set(re.findall(r"^add_user (\S+) ", (COMPOSE / "kafka" / "users.sh").read_text(), re.M))
    command = services["acls"]["command"]
    assert acls_main([arg for arg in command if arg != "--apply"]) == 0
    in_acls = set(re.findall(r"`User:([^`]+)`", capsys.readouterr().out))
    connecting = {_principal(services[name]) for name in LORASTREAM_SERVICES} - {ADMIN_USER}
    assert in_acls == created and connecting <= created
