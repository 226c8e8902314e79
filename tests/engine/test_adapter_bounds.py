"""Adapter boundaries through the engine: registrations outside the roots are refused (the id keeps
its version), files linked out of the root, files over the cap and unsafe module patterns get
their own codes, an evil pattern costs nothing, and a flood of unknown ids is bounded — while good
requests alongside finish."""

from __future__ import annotations

import json
import shutil
import time
import uuid

import pytest

from gpu_engine.adapter_ref import AdapterRef
from gpu_engine.config import EngineConfig
from gpu_engine.engine import Engine
from gpu_engine.errors import (
    AdapterNotFoundError,
    AdapterPathRefusedError,
    AdapterPatternUnsafeError,
    AdapterTooLargeError,
    AdapterUnavailableError,
)
from gpu_engine.types import FinishReason, GenerationRequest, SamplingParams
from tests.engine.engine_helpers import run_all

PROMPT = "Hello café world, the engine"
GOOD = "good"
EVIL_KEY = "(?:(?:.|.)*)*#"  # 4.4 s on 13 characters with Python's re; module names are longer
CONFIG_CAP_BYTES = 4096


def edit_config(path, **changes) -> None:
    config = json.loads((path / "adapter_config.json").read_text())
    (path / "adapter_config.json").write_text(json.dumps({**config, **changes}))


@pytest.fixture(scope="module")
def roots(tmp_path_factory, adapter_root):
    """(root, published, outside): the served root with good and hostile adapters, a second allowed
    directory, and a directory outside both."""
    base = tmp_path_factory.mktemp("bounds")
    root, published, outside = base / "root", base / "published", base / "outside"
    for where in (root / GOOD, published / "v2", outside / "evil"):
        shutil.copytree(adapter_root / "r8-qv", where)
    linked = shutil.copytree(adapter_root / "r8-qv", root / "hostile/linked")
    (linked / "adapter_model.safetensors").unlink()
    (linked / "adapter_model.safetensors").symlink_to(outside / "evil/adapter_model.safetensors")
    edit_config(shutil.copytree(adapter_root / "r8-qv", root / "hostile/evil-pattern"), rank_pattern={EVIL_KEY: 4})
    edit_config(shutil.copytree(adapter_root / "r8-qv", root / "hostile/backref"), alpha_pattern={r"(q)\1_proj": 4})
    edit_config(shutil.copytree(adapter_root / "r8-qv", root / "hostile/big"), padding=" " * CONFIG_CAP_BYTES)
    return root, published, outside


@pytest.fixture
def engine(tiny_model_dir, roots):
    root, published, _ = roots
    config = EngineConfig(
        str(tiny_model_dir), str(root), max_batch_size=4, max_step_tokens=64, adapter_uri_roots=(str(published),),
        max_adapter_config_bytes=CONFIG_CAP_BYTES, max_pending_adapter_loads=4,
    )
    return Engine(config)


def request(adapter_id: str | None, request_id: str | None = None) -> GenerationRequest:
    return GenerationRequest(request_id or uuid.uuid4().hex, PROMPT, adapter_id, SamplingParams(max_new_tokens=4))


def outcome_codes(engine: Engine, requests: list[GenerationRequest]) -> dict[str, str | None]:
    outcomes = run_all(engine, requests)
    return {r.request_id: outcomes[r.request_id].final.error_code for r in requests}


@pytest.mark.parametrize(
    ("adapter_id", "code"),
    [
        ("hostile/linked", AdapterPathRefusedError.code),
        ("hostile/backref", AdapterPatternUnsafeError.code),
        ("hostile/big", AdapterTooLargeError.code),
        ("hostile/evil-pattern", None),  # matched by RE2 in linear time: the adapter simply loads
    ],
)
def test_hostile_adapter_files_get_their_codes_while_good_requests_finish(engine, adapter_id, code):
    started = time.monotonic()
    codes = outcome_codes(engine, [request(adapter_id, "hostile"), request(GOOD, "good"), request(None, "base")])
    assert codes == {"hostile": code, "good": None, "base": None}
    assert time.monotonic() - started < 30


def test_registrations_outside_the_roots_are_refused_and_the_id_keeps_its_version(engine, roots):
    root, published, outside = roots
    for uri in ((outside / "evil").as_uri(), "file:///etc", "s3://any-bucket/adapters/good"):
        with pytest.raises(AdapterPathRefusedError):
            engine.register_adapter(AdapterRef(GOOD, 7, uri))
    assert engine.adapter_cache.registry.current_version(GOOD) == 0
    assert outcome_codes(engine, [request(GOOD, "still-good")]) == {"still-good": None}
    engine.register_adapter(AdapterRef(GOOD, 2, (published / "v2").as_uri()))  # an allowed root
    engine.register_adapter(AdapterRef("renamed", 1, (root / GOOD).as_uri()))
    assert engine.adapter_cache.registry.current_version(GOOD) == 2
    assert outcome_codes(engine, [request(GOOD, "v2"), request("renamed", "r")]) == {"v2": None, "r": None}


def test_a_flood_of_unknown_ids_is_answered_and_bounded(engine):
    assert outcome_codes(engine, [request(GOOD, "warm")]) == {"warm": None}
    flood = [request(f"random/{uuid.uuid4().hex[:12]}") for _ in range(300)]
    good = [request(GOOD, f"good-{n}") for n in range(4)]
    codes = outcome_codes(engine, [*flood[:150], *good, *flood[150:]])
    assert {r.request_id: codes[r.request_id] for r in good} == {r.request_id: None for r in good}
    flood_codes = [codes[r.request_id] for r in flood]
    assert set(flood_codes) <= {AdapterNotFoundError.code, AdapterUnavailableError.code}
    print(f"\nflood of 300 unknown ids: {flood_codes.count(AdapterNotFoundError.code)} not found, "
          f"{flood_codes.count(AdapterUnavailableError.code)} refused for load (max 4 pending)")
    assert engine.adapter_cache.loader.num_loading == 0
    assert engine.adapter_cache.loader.num_remembered_failures <= 300
    assert run_all(engine, [request(GOOD, "after")])["after"].final.finish_reason is FinishReason.LENGTH
