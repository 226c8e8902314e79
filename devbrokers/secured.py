"""Apache Kafka with authentication and authorization on: SASL/SCRAM principals, StandardAuthorizer.

Clients connect over SASL_PLAINTEXT with SCRAM-SHA-256; every user, the administrator included,
is written into the metadata log when the storage is formatted. The administrator is the one
super user (it creates ACLs); everyone else can do only what ACLs allow. The controller listener
authenticates with SASL/PLAIN against a static controller user that clients never get.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from typing import Any

from devbrokers.kafka_jars import KafkaJarBroker
from streamer.config import KafkaConfig

SCRAM_MECHANISM = "SCRAM-SHA-256"
STANDARD_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
ADMIN_USER = "admin"
_CONTROLLER_USER = "controller"
# Users and passwords go into `--add-scram 'SCRAM-SHA-256=[name=…,password=…]'` and JAAS strings
# unquoted: keep them to characters neither syntax treats specially.
_CREDENTIAL_RE = re.compile(r"[A-Za-z0-9._@-]+")


class SecuredKafkaJarBroker(KafkaJarBroker):
    """KafkaJarBroker whose client listener wants SASL/SCRAM and whose authorizer enforces ACLs.

    `users` maps user name to password; "admin" (password `admin_password`, random unless given)
    is added as the super user. Connect as anyone with `kafka_config(user)`.
    """

    kind = "kafka-secured"

    def __init__(
        self,
        libs_dir: str | os.PathLike[str] | None = None,
        *,
        users: Mapping[str, str],
        admin_password: str | None = None,
        **kwargs: Any,
    ) -> None:
        if ADMIN_USER in users:
            raise ValueError(f"{ADMIN_USER!r} is the super user: give its password as admin_password")
        self.admin_password = admin_password or secrets.token_hex(16)
        self.users = {ADMIN_USER: self.admin_password, **users}
        for name, password in self.users.items():
            if not _CREDENTIAL_RE.fullmatch(name) or not _CREDENTIAL_RE.fullmatch(password):
                raise ValueError(
                    f"user {name!r}: names and passwords must be 1+ characters of [A-Za-z0-9._@-]"
                )
        self._controller_password = secrets.token_hex(16)
        super().__init__(libs_dir, **kwargs)

    def kafka_config(self, user: str, **overrides: Any) -> KafkaConfig:
        """How `user` connects (SASL_PLAINTEXT, SCRAM-SHA-256); `overrides` are KafkaConfig fields."""
        if user not in self.users:
            raise ValueError(f"no user {user!r} on this broker")
        return KafkaConfig(
            bootstrap_servers=self.bootstrap_servers,
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism=SCRAM_MECHANISM,
            sasl_plain_username=user,
            sasl_plain_password=self.users[user],
            **overrides,
        )

    def client_kwargs(self) -> dict[str, Any]:
        config = self.kafka_config(ADMIN_USER).aiokafka_kwargs()
        del config["bootstrap_servers"], config["client_id"]
        return config

    def _listener_properties(self) -> dict[str, str]:
        scram_login = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{ADMIN_USER}" password="{self.admin_password}";'
        )
        controller_login = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{_CONTROLLER_USER}" password="{self._controller_password}" '
            f'user_{_CONTROLLER_USER}="{self._controller_password}";'
        )
        return {
            "listeners": (
                f"CLIENT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"CLIENT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "CLIENT",
            "listener.security.protocol.map": "CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
            "sasl.enabled.mechanisms": SCRAM_MECHANISM,
            "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
            f"listener.name.client.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": scram_login,
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": controller_login,
            "authorizer.class.name": STANDARD_AUTHORIZER,
            "super.users": f"User:{ADMIN_USER};User:{_CONTROLLER_USER}",
            "allow.everyone.if.no.acl.found": "false",
        }

    def _format_options(self) -> list[str]:
        options = []
        for name, password in self.users.items():
            options += ["--add-scram", f"{SCRAM_MECHANISM}=[name={name},password={password}]"]
        return options
