"""The ACL set as data: a small evaluator (ALLOW rules, literal and prefixed names, as Kafka
matches them) answers who may do what, row by row; no broker needed."""

from __future__ import annotations

import dataclasses
import io
import re
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from consumers.config import ServeConfig
from consumers.training.config import TrainWorkerConfig
from streamer import TopicNames, default_topic_specs
from streamer.acls import (
    INFERENCE_GROUP,
    TRAINING_GROUP,
    Operation,
    PatternType,
    Principals,
    ResourceType,
    Tenant,
    lorastream_acls,
    main,
    reply_prefix,
)

ROOT = Path(__file__).resolve().parents[2]
TOPICS = TopicNames("ls")
# "a" and "a-b": one tenant's name is the start of another's
PRINCIPALS = Principals(
    operators=("ops",), tenants=(Tenant("a", may_train=True), Tenant("a-b"), Tenant("bob"))
)
BINDINGS = lorastream_acls(TOPICS, PRINCIPALS)
R, W, C, DEL, D = Operation.READ, Operation.WRITE, Operation.CREATE, Operation.DELETE, Operation.DESCRIBE
SERVICE, TRAINER = "lorastream-inference", "lorastream-trainer"


def allows(user: str, resource_type: ResourceType, name: str, op: Operation) -> bool:
    return any(
        b.principal == f"User:{user}"
        and b.resource_type is resource_type
        and b.operation is op
        and (name == b.resource_name if b.pattern_type is PatternType.LITERAL else name.startswith(b.resource_name))
        for b in BINDINGS
    )


def topic(role: str) -> str:
    if role.startswith("replies:"):
        return reply_prefix(TOPICS, role.removeprefix("replies:")) + "c1"
    return getattr(TOPICS, role)


# (user, topic role, operation, allowed)
TOPIC_ROWS = [
    (SERVICE, "requests", R, True),
    (SERVICE, "requests", W, False),
    (SERVICE, "results", W, True),
    (SERVICE, "results", R, True),  # read back for re-served requests (docs/delivery.md)
    (SERVICE, "requests_dlq", W, True),
    (SERVICE, "adapters", R, True),
    (SERVICE, "adapters", W, False),
    (SERVICE, "control", R, True),
    (SERVICE, "replies:a", W, True),
    (SERVICE, "replies:a", R, False),
    (SERVICE, "replies:stranger", W, False),
    (TRAINER, "adapters", W, True),
    (TRAINER, "training_requests", R, True),
    (TRAINER, "training_events", W, True),
    (TRAINER, "requests", R, False),
    (TRAINER, "replies:a", W, False),
    ("a", "requests", W, True),
    ("a", "requests", R, False),
    ("a", "control", W, True),
    ("a", "control", R, False),
    ("a", "results", R, False),
    ("a", "requests_dlq", R, False),
    ("a", "adapters", W, False),
    ("a", "adapters", R, False),
    ("a", "training_requests", W, True),
    ("a", "training_events", R, True),
    ("a", "replies:a", R, True),
    ("a", "replies:a", C, True),
    ("a", "replies:a", DEL, True),
    ("a", "replies:a", W, True),  # its own heartbeat
    ("a", "replies:a-b", W, False),
    ("a-b", "replies:a", W, False),
    ("a", "replies:a-b", R, False),
    ("a", "replies:a-b", C, False),
    ("a-b", "replies:a", R, False),
    ("bob", "training_requests", W, False),
    ("bob", "training_events", R, False),
    ("ops", "requests_dlq", R, True),
    ("ops", "results", R, True),
    ("ops", "replies:a", R, True),
    ("ops", "adapters", W, False),
    ("ops", "requests", W, False),
]


@pytest.mark.parametrize(("user", "role", "op", "allowed"), TOPIC_ROWS, ids=[f"{u}-{o.name}-{r}" for u, r, o, _ in TOPIC_ROWS])
def test_topic_rights(user, role, op, allowed):
    assert allows(user, ResourceType.TOPIC, topic(role), op) is allowed


def test_only_the_trainer_writes_adapters():
    writers = {b.principal for b in BINDINGS if b.operation is W and topic("adapters").startswith(b.resource_name)}
    assert writers == {f"User:{TRAINER}"}


def test_every_shared_topic_has_a_writer_and_a_reader():
    """A topic added to default_topic_specs needs its grants here before it is usable."""
    for spec in default_topic_specs(TOPICS):
        writers = {user for user in (SERVICE, TRAINER, "a") if allows(user, ResourceType.TOPIC, spec.name, W)}
        readers = {user for user in (SERVICE, TRAINER, "a") if allows(user, ResourceType.TOPIC, spec.name, R)}
        assert writers and (readers or spec.name in (TOPICS.results, TOPICS.requests_dlq)), spec.name


def test_tenants_create_no_shared_topic_and_join_no_group():
    for tenant in PRINCIPALS.tenants:
        assert not any(allows(tenant.name, ResourceType.TOPIC, s.name, C) for s in default_topic_specs(TOPICS))
        for group in (INFERENCE_GROUP, TRAINING_GROUP):
            assert not allows(tenant.name, ResourceType.GROUP, group, R)


@pytest.mark.parametrize(
    ("user", "group", "ops"),
    [(SERVICE, INFERENCE_GROUP, {R, D}), (TRAINER, TRAINING_GROUP, {R, D}), (SERVICE, TRAINING_GROUP, set()), ("ops", INFERENCE_GROUP, {R, D, DEL})],
)
def test_group_rights(user, group, ops):
    assert {op for op in Operation if allows(user, ResourceType.GROUP, group, op)} == ops


def test_bindings_are_sorted_and_distinct():
    assert BINDINGS == sorted(set(BINDINGS))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Tenant("a.b"), "no dots"),
        (lambda: Tenant(""), "no dots"),
        (lambda: Principals(tenants=(Tenant("x"), Tenant("x"))), "distinct"),
        (lambda: Principals(inference="ops", operators=("ops",)), "distinct"),
        (lambda: Principals(operators=("a b",)), "user"),
        (lambda: Principals(inference_group=""), "group"),
    ],
)
def test_principals_refuse_ambiguous_names(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_group_names_are_the_services_defaults():
    assert ServeConfig().group_id == INFERENCE_GROUP
    [group_id] = [f.default for f in dataclasses.fields(TrainWorkerConfig) if f.name == "group_id"]
    assert group_id == TRAINING_GROUP


def test_docs_show_the_acl_set_the_command_prints():
    """docs/security.md's table is the output of the command written above it."""
    docs = (ROOT / "docs" / "security.md").read_text()
    block = re.search(r"<!-- acls: python -m streamer.acls (.*?) -->\n(.*?)<!-- /acls -->", docs, re.S)
    assert block, "docs/security.md lacks its ACL table block"
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(block.group(1).split()) == 0
    assert block.group(2) == out.getvalue()



# Training lanes (issue 11 §3): `<prefix>.training.requests.base.<base>`, group `<training group>.<base>`
TRAINING_LANE_ROWS = [  # (user, topic, operation, allowed)
    (TRAINER, "ls.training.requests.base.alpha", R, True),
    (TRAINER, "ls.training.requests.base.alpha", C, True),
    (TRAINER, "ls.training.requests.base.alpha", W, False),
    (SERVICE, "ls.training.requests.base.alpha", R, False),
    ("a", "ls.training.requests.base.alpha", W, True),  # may train
    ("a", "ls.training.requests.base.alpha", D, True),  # submit_training looks the lane up
    ("a", "ls.training.requests.base.alpha", R, False),
    ("a", "ls.training.requests.base.alpha", C, False),
    ("bob", "ls.training.requests.base.alpha", W, False),  # may not train
    ("bob", "ls.training.requests.base.alpha", D, False),
    ("a", "ls.training.events", W, False),  # the lanes' prefix covers nothing beside them
    ("ops", "ls.training.requests.base.alpha", R, True),
    ("ops", "ls.training.requests.base.alpha", W, False),
]


@pytest.mark.parametrize(("user", "name", "op", "allowed"), TRAINING_LANE_ROWS, ids=[f"{u}-{o.name}-{n}" for u, n, o, _ in TRAINING_LANE_ROWS])
def test_training_lane_rights(user, name, op, allowed):
    assert name.startswith(TOPICS.training_lanes_prefix) or name == TOPICS.training_events
    assert allows(user, ResourceType.TOPIC, name, op) is allowed


@pytest.mark.parametrize(
    ("user", "ops"), [(TRAINER, {R, D}), (SERVICE, set()), ("a", set()), ("ops", {R, D, DEL})]
)
def test_only_the_trainer_joins_a_training_lanes_group(user, ops):
    group = f"{TRAINING_GROUP}.alpha"
    assert {op for op in Operation if allows(user, ResourceType.GROUP, group, op)} == ops


def test_release_operators_write_the_adapters_topic_and_nothing_else():
    """`lorastream promote` / `rollback` announce a revision: WRITE and DESCRIBE on the literal
    adapters topic, for the release operators only (never a tenant, not even one that may train)."""
    principals = dataclasses.replace(PRINCIPALS, release_operators=("release-bot",))
    bindings = lorastream_acls(TOPICS, principals)
    granted = {(b.resource_type, b.resource_name, b.pattern_type, b.operation) for b in bindings if b.principal == "User:release-bot"}
    assert granted == {(ResourceType.TOPIC, TOPICS.adapters, PatternType.LITERAL, op) for op in (W, D)}
    writers = {b.principal for b in bindings if b.operation is W and TOPICS.adapters.startswith(b.resource_name)}
    assert writers == {f"User:{TRAINER}", "User:release-bot"}
    assert set(lorastream_acls(TOPICS, PRINCIPALS)) < set(bindings)  # nothing else changes


def test_a_release_operator_is_one_principal_with_one_role():
    with pytest.raises(ValueError, match="distinct"):
        Principals(tenants=(Tenant("a"),), release_operators=("a",))
    with pytest.raises(ValueError, match="user"):
        Principals(release_operators=("has space",))
