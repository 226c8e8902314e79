"""The Kafka ACLs a lorastream deployment needs: who may read and write which topic and group.

One list, built here from the topic prefix and the principals, is what docs/security.md shows,
what the security tests apply to a broker with an authorizer, and what the compose stack's init
service creates (`python -m streamer.acls --apply`). Tenants write requests and cancels and read
only reply topics under their own prefix `<prefix>.replies.<tenant>.`; only the training worker
and release operators (`lorastream promote` / `rollback`) write the adapters topic; operators read
and manage everything but write nothing. A base's own lane (`<prefix>.requests.base.<base>`, read
in group `<inference group>.<base>`) and training lane (`<prefix>.training.requests.base.<base>`,
group `<training group>.<base>`) are granted by prefix, so adding a base needs no new ACL; only
inference consumers write the catalogue.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from aiokafka.errors import for_code
from aiokafka.protocol.admin import CreateAclsRequest_v1
from aiokafka.protocol.api import Request

from schemas import LorastreamError
from streamer.admin import admin_client, default_topic_specs
from streamer.config import KafkaConfig, TopicNames

INFERENCE_GROUP = "lorastream-inference"
TRAINING_GROUP = "lorastream-training"
# No dots: tenant "a"'s reply prefix `<prefix>.replies.a.` would otherwise cover tenant "a.b"'s.
_TENANT_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_USER_RE = re.compile(r"[A-Za-z0-9._@-]{1,128}")


class AclError(LorastreamError):
    """Kafka refused to create an ACL."""


# The numbers are Kafka's wire codes (org.apache.kafka.common.acl / .resource).
class ResourceType(IntEnum):
    TOPIC = 2
    GROUP = 3


class PatternType(IntEnum):
    LITERAL = 3
    PREFIXED = 4


class Operation(IntEnum):
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    DESCRIBE = 8
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11


_ALLOW = 3  # AclPermissionType.ALLOW: lorastream grants only; everything else is denied


@dataclass(frozen=True, order=True)
class AclBinding:
    """One ALLOW rule: `principal` may do `operation` on the resource, from any host."""

    principal: str
    resource_type: ResourceType
    resource_name: str
    pattern_type: PatternType
    operation: Operation


@dataclass(frozen=True)
class Tenant:
    """A tenant principal (`User:<name>`); `may_train` lets it submit fine-tunes; `reads_adapters`
    lets it read the adapters topic (an OpenAI gateway lists the served adapters from it)."""

    name: str
    may_train: bool = False
    reads_adapters: bool = False

    def __post_init__(self) -> None:
        if not _TENANT_RE.fullmatch(self.name):
            raise ValueError(f"tenant {self.name!r}: 1-64 characters of [A-Za-z0-9_-] (no dots)")


@dataclass(frozen=True)
class Principals:
    """The SASL user names of each role, and the consumer groups the services join."""

    inference: str = "lorastream-inference"
    trainer: str = "lorastream-trainer"
    operators: tuple[str, ...] = ()
    tenants: tuple[Tenant, ...] = ()
    release_operators: tuple[str, ...] = ()  # may announce releases on the adapters topic; never a tenant
    inference_group: str = INFERENCE_GROUP
    training_group: str = TRAINING_GROUP

    def __post_init__(self) -> None:
        users = [self.inference, self.trainer, *self.operators, *self.release_operators, *(t.name for t in self.tenants)]
        for user in users:
            if not _USER_RE.fullmatch(user):
                raise ValueError(f"user {user!r}: 1-128 characters of [A-Za-z0-9._@-]")
        if len(set(users)) != len(users):
            raise ValueError("each principal has one role: user names must be distinct")
        if not self.inference_group or not self.training_group:
            raise ValueError("consumer group names must not be empty")


def reply_prefix(topics: TopicNames, tenant: str) -> str:
    """The start of every reply topic of `tenant`: give clients `client_id=f"{tenant}.<id>"`."""
    return topics.replies_for(f"{tenant}.")


def lorastream_acls(topics: TopicNames, principals: Principals) -> list[AclBinding]:
    """Every ACL the deployment needs, sorted. The services may create the shared topics they
    ensure at start-up (an existing topic cannot be changed that way); tenants create none."""
    t, p = topics, principals
    R, W, C, D = Operation.READ, Operation.WRITE, Operation.CREATE, Operation.DESCRIBE
    inference = {  # results: written, and read back to answer re-served requests (docs/delivery.md)
        t.requests: (R,), t.control: (R,), t.adapters: (R,), t.results: (W, R), t.requests_dlq: (W,),
        t.adapter_stats: (W,), t.catalogue: (W,),
    }
    trainer = {t.training_requests: (R,), t.control: (R,), t.training_events: (W,), t.adapters: (W,), t.requests_dlq: (W,)}
    out: list[AclBinding] = []
    for user, grants in ((p.inference, inference), (p.trainer, trainer)):
        for spec in default_topic_specs(t):  # what both services ensure at start-up
            granted = grants.get(spec.name, ())
            out += _topic(user, spec.name, PatternType.LITERAL, C, D, *granted)
    out += _group(p.inference, p.inference_group, R, D)
    out += _topic(p.inference, t.lanes_prefix, PatternType.PREFIXED, C, D, R)  # every base's lane
    out += _group(p.inference, f"{p.inference_group}.", R, D, pattern=PatternType.PREFIXED)  # …and its group
    out += _group(p.trainer, p.training_group, R, D)
    out += _topic(p.trainer, t.training_lanes_prefix, PatternType.PREFIXED, C, D, R)  # every base's training lane
    out += _group(p.trainer, f"{p.training_group}.", R, D, pattern=PatternType.PREFIXED)  # …and its group
    for releaser in p.release_operators:  # `lorastream promote` / `rollback`: a new revision of an adapter
        out += _topic(releaser, t.adapters, PatternType.LITERAL, W, D)
    for tenant in p.tenants:
        prefix = reply_prefix(t, tenant.name)
        out += _topic(p.inference, prefix, PatternType.PREFIXED, W, D)
        # W: a client's liveness heartbeat on its own reply topic (`lorastream topics gc` spares it)
        out += _topic(tenant.name, prefix, PatternType.PREFIXED, C, Operation.DELETE, R, W, D)
        out += _topic(tenant.name, t.requests, PatternType.LITERAL, W, D)
        out += _topic(tenant.name, t.lanes_prefix, PatternType.PREFIXED, W, D)  # a request naming a base
        out += _topic(tenant.name, t.catalogue, PatternType.LITERAL, R, D)  # LoraClient finds a base's lane in it
        out += _topic(tenant.name, t.control, PatternType.LITERAL, W, D)
        out += _topic(tenant.name, t.adapter_stats, PatternType.LITERAL, R, D)  # LoraClient routes by it
        if tenant.may_train:
            out += _topic(tenant.name, t.training_requests, PatternType.LITERAL, W, D)
            out += _topic(tenant.name, t.training_lanes_prefix, PatternType.PREFIXED, W, D)  # a job naming a base
            out += _topic(tenant.name, t.training_events, PatternType.LITERAL, R, D)
        if tenant.reads_adapters:
            out += _topic(tenant.name, t.adapters, PatternType.LITERAL, R, D)
    for operator in p.operators:
        manage = (C, Operation.DELETE, Operation.DESCRIBE_CONFIGS, Operation.ALTER_CONFIGS)
        out += _topic(operator, f"{t.prefix}.", PatternType.PREFIXED, R, D, *manage)
        for group in (p.inference_group, p.training_group):
            out += _group(operator, group, R, D, Operation.DELETE)
        for group in (p.inference_group, p.training_group):  # every base's lane group
            out += _group(operator, f"{group}.", R, D, Operation.DELETE, pattern=PatternType.PREFIXED)
    return sorted(set(out))


def _topic(user: str, name: str, pattern: PatternType, *ops: Operation) -> list[AclBinding]:
    return [AclBinding(f"User:{user}", ResourceType.TOPIC, name, pattern, op) for op in ops]


def _group(user: str, name: str, *ops: Operation, pattern: PatternType = PatternType.LITERAL) -> list[AclBinding]:
    return [AclBinding(f"User:{user}", ResourceType.GROUP, name, pattern, op) for op in ops]


def acl_table(bindings: Iterable[AclBinding]) -> str:
    """A Markdown table: one row per principal and resource, its operations joined."""
    rows: dict[tuple[str, str, str], list[str]] = {}
    for b in sorted(bindings):
        resource = f"{b.resource_type.name.lower()} `{b.resource_name}`"
        key = (b.principal, resource, b.pattern_type.name.lower())
        rows.setdefault(key, []).append(b.operation.name)
    lines = ["| principal | resource | pattern | operations |", "|---|---|---|---|"]
    lines += [f"| `{who}` | {res} | {pat} | {', '.join(ops)} |" for (who, res, pat), ops in rows.items()]
    return "\n".join(lines) + "\n"


async def create_acls(cfg: KafkaConfig, bindings: Iterable[AclBinding]) -> int:
    """Create the ACLs (those that exist already are left as they are); return how many were sent.

    `cfg` must connect as a principal allowed to alter the cluster's ACLs (a super user).
    aiokafka has no public ACL call: this sends Kafka's CreateAcls request itself.
    """
    bindings = list(bindings)
    async with admin_client(cfg) as admin:
        response = await admin._client.send(admin._client.get_random_node(), _CreateAcls(bindings))
    for b, (error_code, message) in zip(bindings, response.creation_responses, strict=True):
        if error_code != 0:
            raise AclError(f"cannot create {b}: {message or for_code(error_code).message}")
    return len(bindings)


class _CreateAcls(Request[CreateAclsRequest_v1]):
    """Kafka's CreateAcls (v1, the oldest Kafka 4 accepts) for many bindings in one request."""

    API_KEY = CreateAclsRequest_v1.API_KEY

    def __init__(self, bindings: Sequence[AclBinding]) -> None:
        self._bindings = bindings

    def build(self, request_struct_class: type[CreateAclsRequest_v1]) -> CreateAclsRequest_v1:
        return request_struct_class(
            [
                (b.resource_type, b.resource_name, b.pattern_type, b.principal, "*", b.operation, _ALLOW)
                for b in self._bindings
            ]
        )


def _tenant_arg(text: str) -> Tenant:
    name, _, flag = text.partition(":")
    if flag not in ("", "train", "gateway"):
        raise argparse.ArgumentTypeError(f"{text!r}: NAME, NAME:train or NAME:gateway")
    return Tenant(name, may_train=flag == "train", reads_adapters=flag == "gateway")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streamer.acls",
        description="Print the Kafka ACLs lorastream needs (a Markdown table), or create them.",
    )
    parser.add_argument(
        "--topic-prefix",
        default=os.environ.get("LORASTREAM_TOPIC_PREFIX") or TopicNames().prefix,
        help="prefix of every topic name (env LORASTREAM_TOPIC_PREFIX; default %(default)s)",
    )
    parser.add_argument("--inference-user", default=Principals.inference)
    parser.add_argument("--trainer-user", default=Principals.trainer)
    parser.add_argument("--operator", action="append", default=[], help="an operator's user name (repeat)")
    parser.add_argument(
        "--release-operator", action="append", default=[],
        help="a user that may announce releases on the adapters topic (lorastream promote/rollback; repeat)",
    )
    parser.add_argument(
        "--tenant", action="append", default=[], type=_tenant_arg, help="NAME, NAME:train if it may fine-tune, NAME:gateway for an OpenAI gateway (repeat)"
    )
    parser.add_argument("--inference-group", default=INFERENCE_GROUP)
    parser.add_argument("--training-group", default=TRAINING_GROUP)
    parser.add_argument(
        "--apply", action="store_true", help="create them on the broker named by LORASTREAM_* (as a super user)"
    )
    args = parser.parse_args(argv)
    principals = Principals(
        inference=args.inference_user,
        trainer=args.trainer_user,
        operators=tuple(args.operator),
        release_operators=tuple(args.release_operator),
        tenants=tuple(args.tenant),
        inference_group=args.inference_group,
        training_group=args.training_group,
    )
    bindings = lorastream_acls(TopicNames(args.topic_prefix), principals)
    if args.apply:
        count = asyncio.run(create_acls(KafkaConfig.from_env(), bindings))
        print(f"{count} ACLs in place", file=sys.stderr)
    else:
        sys.stdout.write(acl_table(bindings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
