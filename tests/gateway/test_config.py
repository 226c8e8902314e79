"""GatewayConfig's checks, the API-key list, the command line and the gateway's Kafka ACLs."""

from __future__ import annotations

import pytest

from cli.gateway_commands import gateway_config
from cli.main import build_parser
from gateway.config import GatewayConfig, parse_api_keys
from streamer import TopicNames
from streamer.acls import Operation, Principals, Tenant, lorastream_acls


@pytest.mark.parametrize(
    "bad",
    [dict(port=70000), dict(base_name=""), dict(base_name=" x"), dict(api_keys={"short": "t"}),
     dict(api_keys={"long-enough-key": "bad tenant"}), dict(default_max_tokens=0), dict(request_timeout_s=0),
     dict(retry_after_s=-1), dict(kafka_tenant="has.dot")],
)
def test_invalid_settings_are_refused(bad):
    with pytest.raises(ValueError):
        GatewayConfig(**bad)


def test_api_keys_are_read_only_and_hidden_from_repr():
    config = GatewayConfig(api_keys={"sk-secret-123": "team"})
    assert "sk-secret" not in repr(config)
    with pytest.raises(TypeError):
        config.api_keys["x"] = "y"


def test_parse_api_keys():
    assert parse_api_keys(["# keys", "", "sk-aaaaaaaa team-a", "sk-bbbbbbbb  # no tenant"]) == {
        "sk-aaaaaaaa": "team-a", "sk-bbbbbbbb": "tenant-4"}
    for bad in (["a b c"], ["k1111111 x", "k1111111 y"]):
        with pytest.raises(ValueError):
            parse_api_keys(bad)


def test_the_command_line(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("sk-from-file-1 team-b\n")
    args = build_parser().parse_args([
        "gateway", "--port", "0", "--base-name", "llama", "--api-key", "sk-from-flag-1:team-a",
        "--api-keys-file", str(keys), "--kafka-tenant", "gw",
    ])
    config = gateway_config(args)
    assert config.base_name == "llama" and config.port == 0
    assert dict(config.api_keys) == {"sk-from-flag-1": "team-a", "sk-from-file-1": "team-b"}
    assert config.client_id().startswith("gw.")
    assert GatewayConfig().client_id() != GatewayConfig().client_id()


def test_a_gateway_tenant_reads_the_adapters_topic_and_its_own_replies_only():
    topics = TopicNames("p")
    acls = lorastream_acls(topics, Principals(tenants=(Tenant("gw", reads_adapters=True), Tenant("app"))))
    granted = {(b.principal, b.resource_name, b.operation) for b in acls}
    assert ("User:gw", "p.adapters", Operation.READ) in granted
    assert ("User:app", "p.adapters", Operation.READ) not in granted
    assert ("User:gw", "p.replies.gw.", Operation.READ) in granted
    assert ("User:gw", "p.requests", Operation.WRITE) in granted


def test_the_compose_gateway_is_a_tenant_with_its_own_user_that_may_read_the_adapters(capsys):
    import re

    import yaml

    from streamer.acls import main as acls_main
    from tests.test_compose import COMPOSE, _flag

    services = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())["services"]
    command = services["gateway"]["command"]
    user = _flag(command, "--sasl-username")
    assert _flag(command, "--kafka-tenant") == user
    assert services["gateway"]["environment"]["LORASTREAM_SASL_PASSWORD"]
    assert re.search(rf"^add_user {user} ", (COMPOSE / "kafka" / "users.sh").read_text(), re.M)
    assert acls_main([arg for arg in services["acls"]["command"] if arg != "--apply"]) == 0
    table = capsys.readouterr().out
    assert f"| `User:{user}` | topic `lorastream.adapters` | literal | READ, DESCRIBE |" in table
    assert f"| `User:{user}` | topic `lorastream.replies.{user}.` | prefixed |" in table
