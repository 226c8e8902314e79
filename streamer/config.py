"""How to reach Kafka (connection and security) and what the topics are called."""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.limits import TOPIC_PATTERN

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
# The longest a consumer's fetch waits on the broker for data. Apache Kafka (and brokers that
# implement its long poll) answers as soon as data arrives, so there a large wait costs no latency
# and saves the broker from answering hundreds of empty fetches per second per idle consumer.
# The embedded Tansu broker holds every fetch for the full wait: only a few ms keep it responsive.
DEFAULT_FETCH_MAX_WAIT_MS = 5

_TOPIC_RE = re.compile(TOPIC_PATTERN)
_MAX_PREFIX_CHARS = 120  # leaves room for the longest suffix within Kafka's 249 characters


@dataclass(frozen=True)
class KafkaConfig:
    """Connection settings shared by every producer, consumer and admin client."""

    bootstrap_servers: str
    client_id: str = "lorastream"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    fetch_max_wait_ms: int = DEFAULT_FETCH_MAX_WAIT_MS  # 500 suits Apache Kafka; see above

    def __post_init__(self) -> None:
        if not self.bootstrap_servers.strip():
            raise ValueError("bootstrap_servers must not be empty")
        if not self.client_id:
            raise ValueError("client_id must not be empty")
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise ValueError(f"security_protocol must be one of {SECURITY_PROTOCOLS}")
        uses_sasl = self.security_protocol.startswith("SASL_")
        if uses_sasl:
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise ValueError(
                    f"{self.security_protocol} needs sasl_mechanism in {SASL_MECHANISMS}"
                )
            if not self.sasl_plain_username or self.sasl_plain_password is None:
                raise ValueError(
                    f"{self.security_protocol} needs sasl_plain_username and _password"
                )
        elif self.sasl_mechanism is not None:
            raise ValueError("sasl_mechanism is set but security_protocol is not SASL_*")
        if self.ssl_keyfile and not self.ssl_certfile:
            raise ValueError("ssl_keyfile needs ssl_certfile")
        has_ssl_files = any((self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile))
        if has_ssl_files and not self.security_protocol.endswith("SSL"):
            raise ValueError("ssl_* files are set but security_protocol is not SSL or SASL_SSL")
        if not 0 <= self.fetch_max_wait_ms <= 60_000:
            raise ValueError("fetch_max_wait_ms must be within [0, 60000]")

    @classmethod
    def from_env(
        cls, bootstrap: str | None = None, env: Mapping[str, str] | None = None
    ) -> KafkaConfig:
        """Settings from LORASTREAM_* variables; `bootstrap` wins over LORASTREAM_BOOTSTRAP."""
        env = os.environ if env is None else env
        return cls(
            bootstrap_servers=bootstrap or env.get("LORASTREAM_BOOTSTRAP", DEFAULT_BOOTSTRAP),
            client_id=env.get("LORASTREAM_CLIENT_ID", "lorastream"),
            security_protocol=env.get("LORASTREAM_SECURITY_PROTOCOL", "PLAINTEXT"),
            sasl_mechanism=env.get("LORASTREAM_SASL_MECHANISM") or None,
            sasl_plain_username=env.get("LORASTREAM_SASL_USERNAME") or None,
            sasl_plain_password=env.get("LORASTREAM_SASL_PASSWORD"),
            ssl_cafile=env.get("LORASTREAM_SSL_CAFILE") or None,
            ssl_certfile=env.get("LORASTREAM_SSL_CERTFILE") or None,
            ssl_keyfile=env.get("LORASTREAM_SSL_KEYFILE") or None,
            fetch_max_wait_ms=int(
                env.get("LORASTREAM_FETCH_MAX_WAIT_MS") or DEFAULT_FETCH_MAX_WAIT_MS
            ),
        )

    def aiokafka_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for any aiokafka client (producer, consumer, admin).

        `fetch_max_wait_ms` is a consumer setting: `streamer.make_consumer` applies it.
        """
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism is not None:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_plain_username
            kwargs["sasl_plain_password"] = self.sasl_plain_password
        if self.security_protocol.endswith("SSL"):
            kwargs["ssl_context"] = self._ssl_context()
        return kwargs

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ssl_cafile)
        if self.ssl_certfile:
            context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
        return context


@dataclass(frozen=True)
class TopicNames:
    """Every topic lorastream uses, named `<prefix>.<role>`."""

    prefix: str = "lorastream"

    def __post_init__(self) -> None:
        if not _TOPIC_RE.match(self.prefix) or len(self.prefix) > _MAX_PREFIX_CHARS:
            raise ValueError(
                f"topic prefix must be 1-{_MAX_PREFIX_CHARS} characters of [A-Za-z0-9._-]"
            )

    @property
    def requests(self) -> str:
        return f"{self.prefix}.requests"

    @property
    def lanes_prefix(self) -> str:
        """The start of every base's own request topic (a lane): `<prefix>.requests.base.`.

        Not `<prefix>.requests.` alone: an ACL granting tenants that prefix would cover the dead
        letter topic `<prefix>.requests.dlq` too."""
        return f"{self.prefix}.requests.base."

    def requests_for(self, base_name: str) -> str:
        """The request topic of one base's lane (`serve --base-lane`): `<prefix>.requests.base.<base_name>`.

        A base name may hold characters a topic cannot (`/`, `:`, `@`, `+`): such a base is served
        in a lane under a topic-safe `--base-name`. Raises ValueError."""
        name = f"{self.lanes_prefix}{base_name}"
        if not base_name or not _TOPIC_RE.match(name) or base_name in (".", ".."):
            raise ValueError(
                f"base name {base_name!r} cannot name a topic: a lane needs a --base-name of [A-Za-z0-9._-]"
                f" (at most {249 - len(self.lanes_prefix)} characters)"
            )
        return name

    @property
    def requests_dlq(self) -> str:
        return f"{self.prefix}.requests.dlq"

    @property
    def results(self) -> str:
        return f"{self.prefix}.results"

    @property
    def control(self) -> str:
        return f"{self.prefix}.control"

    @property
    def training_requests(self) -> str:
        return f"{self.prefix}.training.requests"

    @property
    def training_lanes_prefix(self) -> str:
        """The start of every base's own training-request topic: `<prefix>.training.requests.base.`."""
        return f"{self.prefix}.training.requests.base."

    def training_requests_for(self, base_name: str) -> str:
        """The training-request topic of one base's lane (`train-worker --base-lane`):
        `<prefix>.training.requests.base.<base_name>`. Raises ValueError for a name that cannot
        be part of a topic (use a topic-safe `--base-name`)."""
        name = f"{self.training_lanes_prefix}{base_name}"
        if not base_name or not _TOPIC_RE.match(name) or base_name in (".", ".."):
            raise ValueError(
                f"base name {base_name!r} cannot name a topic: a training lane needs a --base-name of"
                f" [A-Za-z0-9._-] (at most {249 - len(self.training_lanes_prefix)} characters)"
            )
        return name

    @property
    def training_events(self) -> str:
        return f"{self.prefix}.training.events"

    @property
    def adapters(self) -> str:
        return f"{self.prefix}.adapters"

    @property
    def adapter_stats(self) -> str:
        return f"{self.prefix}.adapter-stats"

    @property
    def catalogue(self) -> str:
        """Compacted: one record per inference consumer, what it serves (streamer.catalogue)."""
        return f"{self.prefix}.catalogue"

    def replies_for(self, client_id: str) -> str:
        """The private reply topic of one client instance."""
        name = f"{self.prefix}.replies.{client_id}"
        if not client_id or not _TOPIC_RE.match(name):
            raise ValueError("client_id must be 1+ characters of [A-Za-z0-9._-] (topic-safe)")
        return name
