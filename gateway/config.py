"""GatewayConfig: what one gateway process serves and how (every default defined here, once)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from schemas.limits import MAX_NEW_TOKENS
from streamer.acls import Tenant
from streamer.client import DEFAULT_REQUEST_TIMEOUT_S

TENANT_PATTERN = r"^[A-Za-z0-9._-]{1,64}\Z"  # a tenant name also prefixes request ids (REQUEST_ID_PATTERN)
DEFAULT_BASE_NAME = "base"
_TENANT_RE = re.compile(TENANT_PATTERN)


@dataclass(frozen=True)
class GatewayConfig:
    """`api_keys` maps a key to its tenant; empty: no key needed and every request is `anonymous`."""

    host: str = "127.0.0.1"
    port: int = 8000
    base_name: str = DEFAULT_BASE_NAME  # the `model` that names the base (besides "base")
    api_keys: Mapping[str, str] = field(default_factory=dict, repr=False)
    default_max_tokens: int = 256  # when a request gives neither max_tokens nor max_completion_tokens
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S  # longest wait for the next answer record of a request
    retry_after_s: int = 1  # Retry-After of 503 answers (overloaded, Kafka unreachable)
    adapters_wait_s: float = 10.0  # at start: longest wait for the adapters topic to be read whole
    # the Kafka tenant (SASL user) the gateway connects as: its private reply topic is then named
    # under that tenant's prefix, `<prefix>.replies.<tenant>.<id>`, as the ACLs require (docs/security.md)
    kafka_tenant: str | None = None

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("host must not be empty")
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be within [0, 65535]")
        if not self.base_name or self.base_name != self.base_name.strip():
            raise ValueError("base_name must be a non-empty name without surrounding spaces")
        for key, tenant in self.api_keys.items():
            if len(key) < 8:
                raise ValueError("an API key must be at least 8 characters")
            if not _TENANT_RE.match(tenant):
                raise ValueError(f"tenant {tenant!r} must be 1-64 characters of [A-Za-z0-9._-]")
        if not 1 <= self.default_max_tokens <= MAX_NEW_TOKENS:
            raise ValueError(f"default_max_tokens must be within [1, {MAX_NEW_TOKENS}]")
        if self.request_timeout_s <= 0:
            raise ValueError("request_timeout_s must be > 0")
        if self.retry_after_s < 0:
            raise ValueError("retry_after_s must be >= 0")
        if self.adapters_wait_s < 0:
            raise ValueError("adapters_wait_s must be >= 0")
        if self.kafka_tenant is not None:
            Tenant(self.kafka_tenant)  # raises ValueError for a name the ACLs cannot give a reply prefix
        object.__setattr__(self, "api_keys", MappingProxyType(dict(self.api_keys)))

    @property
    def needs_api_key(self) -> bool:
        return bool(self.api_keys)

    def client_id(self) -> str:
        """A fresh id for this process's LoraClient (and so its reply topic)."""
        instance = uuid.uuid4().hex[:16]
        return instance if self.kafka_tenant is None else f"{self.kafka_tenant}.{instance}"


def parse_api_keys(lines: list[str]) -> dict[str, str]:
    """`KEY` or `KEY TENANT` per entry (a file's lines or `--api-key` values); `#` starts a comment.

    A key given without a tenant gets `tenant-N`, N its position among the entries.
    """
    keys: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.split()
        if len(parts) > 2:
            raise ValueError(f"API key entry {number}: expected `KEY [TENANT]`")
        key, tenant = parts[0], parts[1] if len(parts) == 2 else f"tenant-{number}"
        if key in keys:
            raise ValueError(f"API key entry {number}: the key is given twice")
        keys[key] = tenant
    return keys
