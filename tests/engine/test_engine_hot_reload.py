"""Hot reload without a restart: a new version is served to later requests while a running request
finishes on the version it started with (PEFT greedy is the oracle for both); retired adapters and
bad registrations get typed errors while other adapters keep serving."""

from __future__ import annotations

import shutil

import pytest

from gpu_engine.adapter_ref import AdapterRef
from gpu_engine.config import EngineConfig
from gpu_engine.engine import Engine
from gpu_engine.tiny import build_tiny_adapter
from gpu_engine.adapter_files import adapter_checksum
from gpu_engine.types import FinishReason, GenerationRequest, SamplingParams
from gpu_engine.errors import AdapterChecksumError, AdapterNotFoundError
from tests.engine.engine_helpers import ALL_PROJECTIONS, Outcome, peft_greedy, peft_model, run_all

PROMPT = "Hello café world, the engine"
ADAPTER = "r16-all"  # version 0 lives in the store root; version 2 elsewhere, with other weights
LONG, SHORT = 16, 8


@pytest.fixture(scope="module")
def versions(tmp_path_factory, tiny_model_dir, adapter_root):
    root = tmp_path_factory.mktemp("versions")
    shutil.copytree(adapter_root / ADAPTER, root / "v1")
    build_tiny_adapter(tiny_model_dir, root / "v2", r=16, alpha=32, target_modules=ALL_PROJECTIONS, seed=99)
    return root


@pytest.fixture(scope="module")
def expected(tiny_model_dir, versions):
    """PEFT's greedy tokens per version and length."""
    from transformers import AutoTokenizer

    oracle = peft_model(tiny_model_dir, versions, ["v1", "v2"])
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    out = {(v, n): peft_greedy(oracle, tokenizer, PROMPT, v, n) for v in ("v1", "v2") for n in (LONG, SHORT)}
    assert out[("v1", SHORT)] != out[("v2", SHORT)], "the versions must differ for the test to mean anything"
    return out


@pytest.fixture
def engine(tiny_model_dir, adapter_root, versions):
    config = EngineConfig(
        str(tiny_model_dir), str(adapter_root), max_batch_size=4, max_step_tokens=64, adapter_uri_roots=(str(versions),)
    )
    return Engine(config)


def v2_ref(versions, **kw) -> AdapterRef:
    path = versions / "v2"
    return AdapterRef(ADAPTER, 2, path.as_uri(), **{"checksum": adapter_checksum(path), **kw})


def request(request_id: str, max_new_tokens: int, adapter: str = ADAPTER) -> GenerationRequest:
    return GenerationRequest(request_id, PROMPT, adapter, SamplingParams(max_new_tokens=max_new_tokens))


def start_running(engine: Engine, request_id: str) -> Outcome:
    """Add a long request and step until it has produced a few tokens."""
    engine.add_request(request(request_id, LONG))
    outcome = Outcome()
    while len(outcome.token_ids) < 3:
        outcome.events += [e for e in engine.step() if e.request_id == request_id]
    return outcome


def finish(engine: Engine, running: dict[str, Outcome], requests=()) -> dict[str, Outcome]:
    """Run everything to the end; the outcomes of `running` continue where they were."""
    outcomes = {**running, **{r.request_id: Outcome() for r in requests}}
    for r in requests:
        engine.add_request(r)
    while engine.has_work():
        for event in engine.step():
            outcomes[event.request_id].events.append(event)
    return outcomes


def test_a_new_version_is_served_while_the_running_request_finishes_on_its_own(engine, versions, expected):
    running = start_running(engine, "long-v1")
    engine.register_adapter(v2_ref(versions))
    running.events += engine.step()
    assert engine.adapter_cache.device.num_pins((ADAPTER, 0)) == 1  # superseded, still pinned by long-v1
    outcomes = finish(engine, {"long-v1": running}, [request("short-v2", SHORT)])
    assert outcomes["long-v1"].token_ids == expected[("v1", LONG)]
    assert outcomes["short-v2"].token_ids == expected[("v2", SHORT)]
    assert {o.final.finish_reason for o in outcomes.values()} == {FinishReason.LENGTH}
    # version 0 left both tiers with its last request; later requests keep getting version 2
    assert engine.adapter_cache.device.keys() == [(ADAPTER, 2)] and (ADAPTER, 0) not in engine.adapter_cache.host
    assert run_all(engine, [request("again", SHORT)])["again"].token_ids == expected[("v2", SHORT)]


def test_retired_adapters_are_not_found_and_can_come_back(engine, versions, expected):
    running = start_running(engine, "long-v1")
    engine.retire_adapter(ADAPTER)
    outcomes = finish(engine, {"long-v1": running}, [request("after-retire", SHORT), request("other", SHORT, "r8-qv")])
    assert outcomes["long-v1"].token_ids == expected[("v1", LONG)]
    assert outcomes["after-retire"].final.error_code == AdapterNotFoundError.code
    assert outcomes["other"].final.finish_reason is FinishReason.LENGTH
    assert ADAPTER not in {key[0] for key in engine.adapter_cache.device.keys()}
    engine.register_adapter(v2_ref(versions))
    assert run_all(engine, [request("back", SHORT)])["back"].token_ids == expected[("v2", SHORT)]


@pytest.mark.parametrize(
    ("ref_options", "code"),
    [
        ({"checksum": "0" * 64}, AdapterChecksumError.code),
        ({"uri": "nonexistent"}, AdapterNotFoundError.code),  # a missing directory inside an allowed root
    ],
)
def test_a_bad_registration_fails_its_requests_others_keep_serving(engine, versions, ref_options, code):
    if "uri" in ref_options:
        ref_options = {"uri": (versions / ref_options["uri"]).as_uri()}
    engine.register_adapter(AdapterRef(**{**v2_ref(versions).__dict__, **ref_options}))
    outcomes = run_all(engine, [request("bad", SHORT), request("other", SHORT, "r8-qv")])
    assert outcomes["bad"].final.error_code is code
    assert outcomes["other"].final.finish_reason is FinishReason.LENGTH
