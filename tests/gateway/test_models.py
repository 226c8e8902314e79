"""The `model` names: the base by its names, adapters by id, and the adapters topic's table."""

from __future__ import annotations

import pytest

from gateway.errors import ApiError
from gateway.models import ModelCatalogue
from schemas import AdapterEvent, encode


@pytest.mark.parametrize(
    ("model", "adapter_id"),
    [("llama-tiny", None), ("base", None), ("acme/sql", "acme/sql"), ("llama-tiny:acme/sql", "acme/sql"),
     ("base:acme/sql", "acme/sql"), ("never-registered", "never-registered")],
)
def test_resolve(model, adapter_id):
    assert ModelCatalogue("llama-tiny").resolve(model) == adapter_id


@pytest.mark.parametrize("model", ["../etc", "/abs", "has space", "x" * 129, "llama-tiny:"])
def test_names_that_cannot_be_an_adapter_are_404(model):
    with pytest.raises(ApiError) as info:
        ModelCatalogue("llama-tiny").resolve(model)
    assert info.value.status == 404 and info.value.code == "model_not_found"


def event(adapter_id, version, **kw):
    return adapter_id.encode(), encode(AdapterEvent(adapter_id=adapter_id, version=version, uri="", ts_ms=5000, **kw))


def test_the_catalogue_follows_the_adapters_table():
    catalogue = ModelCatalogue("llama-tiny")
    for key, value in [event("b/two", 1), event("a/one", 2), event("a/one", 1), (b"x", b"not json"),
                       (b"other", event("c/three", 1)[1]), event("gone", 1), event("gone", 2, deleted=True),
                       event("tomb", 1), (b"tomb", None)]:
        catalogue.apply(key, value)
    listing = catalogue.listing()
    assert [m["id"] for m in listing] == ["llama-tiny", "a/one", "b/two"]
    assert listing[1]["parent"] == "llama-tiny" and listing[1]["created"] == 5
    assert catalogue.adapters["a/one"].version == 2  # an older version never replaces a newer one


def test_a_rollback_shows_in_the_listing():
    """A rollback is a higher revision naming an older version: the catalogue follows it, as the
    consumers do; a stale record of a lower revision changes nothing."""
    catalogue = ModelCatalogue("llama-tiny")
    catalogue.apply(*event("a/one", 2, revision=1))
    catalogue.apply(*event("a/one", 1, revision=2))  # `lorastream rollback a/one`
    assert (catalogue.adapters["a/one"].version, catalogue.adapters["a/one"].revision) == (1, 2)
    catalogue.apply(*event("a/one", 3, revision=1))  # an older revision, even of a higher version
    assert (catalogue.adapters["a/one"].version, catalogue.adapters["a/one"].revision) == (1, 2)
    catalogue.apply(*event("a/one", 3, revision=2))
    assert catalogue.adapters["a/one"].version == 3


def _catalogue_with_other_bases() -> ModelCatalogue:
    catalogue = ModelCatalogue("llama-tiny")
    for key, value in [event("acme/sql", 1), event("qwen/sql", 1, base_model="qwen-tiny"), event("own/x", 1, base_model="llama-tiny")]:
        catalogue.apply(key, value)
    return catalogue


@pytest.mark.parametrize(
    ("model", "route"),
    [("llama-tiny", (None, None)), ("base:acme/sql", (None, "acme/sql")), ("llama-tiny:own/x", (None, "own/x")),
     ("qwen-tiny", ("qwen-tiny", None)), ("qwen-tiny:qwen/sql", ("qwen-tiny", "qwen/sql")),
     ("never-announced:a/b", ("never-announced", "a/b")), ("org/m:rev:a/b", ("org/m:rev", "a/b")),
     ("acme/sql", (None, "acme/sql")), ("unknown-name", (None, "unknown-name"))],
)
def test_route_names_another_base_by_its_name_or_base_colon_adapter(model, route):
    """A bare name is another base only when an announcement names it; `<base>:<adapter>` always is
    (a base nobody serves is then the service's base_not_served)."""
    assert _catalogue_with_other_bases().route(model) == route


@pytest.mark.parametrize("model", ["qwen-tiny:", ":a/b", "has space:a/b", "qwen-tiny:../x", "llama-tiny:"])
def test_route_refuses_what_cannot_be_a_base_and_an_adapter(model):
    with pytest.raises(ApiError) as info:
        _catalogue_with_other_bases().route(model)
    assert info.value.status == 404 and info.value.code == "model_not_found"


def test_the_listing_shows_other_bases_and_each_adapters_own_base():
    listing = _catalogue_with_other_bases().listing()
    assert [(m["id"], m["parent"]) for m in listing] == [
        ("llama-tiny", None), ("qwen-tiny", None), ("acme/sql", "llama-tiny"), ("own/x", "llama-tiny"), ("qwen/sql", "qwen-tiny"),
    ]  # fmt: skip
