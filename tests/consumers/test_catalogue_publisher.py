"""What a consumer announces of its engine in the catalogue (no broker, no torch)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from consumers.inference.catalogue_publisher import Lane, adapter_tiers, describe, served_base_name
from streamer.catalogue import Tier, decode_served_base, encode_served_base

LANE = Lane("p.requests.base.alpha", "lorastream-inference.alpha")


class Keys:
    def __init__(self, keys, error: Exception | None = None) -> None:
        self._keys, self._error = keys, error

    def keys(self):
        if self._error is not None:
            raise self._error
        return list(self._keys)


def engine_thread(device=(), host=(), arch="llama", quantize=None, max_model_len=2048, device_error=None):
    """The shape of gpu_engine.engine_thread.EngineThread that `describe` reads."""
    cache = SimpleNamespace(device=Keys(device, device_error), host=Keys(host))
    inner = SimpleNamespace(
        spec=SimpleNamespace(arch=arch), config=SimpleNamespace(quantize=quantize), max_model_len=max_model_len,
        adapter_cache=cache,
    )
    return SimpleNamespace(engine=inner, base_name="alpha")


def test_an_engine_thread_is_described_whole():
    engine = engine_thread(device=[("a", 1)], host=[("a", 1), ("b", 2)], quantize="nf4")
    entry = describe(engine, "c0", LANE, "alpha")
    assert (entry.base, entry.architecture, entry.quantization, entry.max_model_len) == ("alpha", "llama", "nf4", 2048)
    assert (entry.requests_topic, entry.group_id, entry.consumer) == (LANE.topic, LANE.group_id, "c0")
    assert entry.adapter_tiers == {"a": Tier.DEVICE, "b": Tier.HOST}
    assert decode_served_base(encode_served_base(entry)) == entry  # what it sends decodes within the bounds


def test_a_stand_in_engine_announces_its_base_alone():
    entry = describe(SimpleNamespace(base_name="alpha"), "c0", LANE, "alpha")
    assert (entry.architecture, entry.quantization, entry.max_model_len, entry.adapter_tiers) == (None, None, 0, {})


@pytest.mark.parametrize(
    ("field", "value", "announced"),
    [("arch", "llama with spaces", None), ("arch", "x" * 65, None), ("max_model_len", -5, 0), ("max_model_len", "big", 0)],
)
def test_values_outside_the_bounds_are_left_out_not_sent(field, value, announced):
    engine = engine_thread(**{field: value})
    entry = describe(engine, "c0", LANE, "alpha")
    assert (entry.architecture if field == "arch" else entry.max_model_len) == announced
    decode_served_base(encode_served_base(entry))


def test_tiers_skip_ids_the_wire_refuses_and_a_snapshot_that_raced():
    assert adapter_tiers(engine_thread(host=[("ok/id", 1), ("../escape", 1), ("/abs", 1)])) == {"ok/id": Tier.HOST}
    raced = engine_thread(device=[("a", 1)], device_error=RuntimeError("dictionary changed size during iteration"))
    assert adapter_tiers(raced) == {}


@pytest.mark.parametrize(("name", "served"), [("alpha", "alpha"), ("org/model:v1", "org/model:v1"), ("my model", None), (None, None), (7, None)])
def test_the_served_base_name_is_one_the_wire_accepts(name, served):
    assert served_base_name(SimpleNamespace(base_name=name)) == served
