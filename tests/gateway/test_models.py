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
