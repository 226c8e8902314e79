"""Fine-tuning bases of other families: targets named in the base's own modules, results served exactly.

A tiny phi3 (fused qkv_proj / gate_up_proj) and a tiny phi (dense, fc1, fc2; a parallel block) each
train a few steps through `run_training`; the adapter loads in the engine and its greedy tokens equal
`PeftModel.generate`'s. Targets a base does not have are refused as `invalid_spec`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpu_engine.config import EngineConfig
from gpu_engine.engine import Engine
from gpu_engine.families import FAMILIES
from gpu_engine.tiny import build_tiny_model
from gpu_engine.training.defaults import (
    ALL_LINEAR,
    LORA_LAND,
    SIZE_TIERS,
    BaseShape,
    choose_settings,
    read_base_shape,
    resolve_targets,
    tier_targets,
)
from gpu_engine.training.errors import InvalidSpecError, TrainErrorCode
from gpu_engine.training.spec import LORA_TARGETS, TrainJobSpec
from gpu_engine.training.trainer import run_training
from gpu_engine.types import GenerationRequest, SamplingParams
from tests.engine.engine_helpers import peft_greedy, peft_model, run_all

TINY = SIZE_TIERS[-1]
PROMPTS = ("the cat sat on", "a long river runs")
MAX_NEW = 8


@pytest.mark.parametrize(
    ("arch", "names", "expected"),
    [
        ("phi3", ("q_proj", "v_proj"), ("qkv_proj",)),  # q/v of a fused model: the fused module
        ("phi3", ("gate_proj", "down_proj"), ("gate_up_proj", "down_proj")),
        ("phi3", ("qkv_proj", "o_proj"), ("qkv_proj", "o_proj")),
        ("phi", ("q_proj", "v_proj", "dense", "fc2"), ("q_proj", "v_proj", "dense", "fc2")),
        ("llama", ("q_proj", "down_proj"), ("q_proj", "down_proj")),
    ],
)
def test_targets_resolve_to_the_family_modules(arch, names, expected):
    assert resolve_targets(FAMILIES[arch], names) == expected


@pytest.mark.parametrize(
    ("arch", "names", "missing"),
    [("phi", ("q_proj", "gate_proj"), "gate_proj"), ("phi3", ("fc1",), "fc1"), ("llama", ("qkv_proj",), "qkv_proj")],
)
def test_a_target_the_base_lacks_is_refused_with_its_projections(arch, names, missing):
    with pytest.raises(ValueError, match=f"'{missing}'.*its projections: {', '.join(FAMILIES[arch].projections)}"):
        resolve_targets(FAMILIES[arch], names)


def test_spec_accepts_every_family_projection_and_nothing_else():
    assert set(LORA_TARGETS) == {name for family in FAMILIES.values() for name in family.projections}
    assert {"qkv_proj", "gate_up_proj", "dense", "fc1", "fc2"} <= set(LORA_TARGETS)
    with pytest.raises(ValueError, match="lm_head"):
        TrainJobSpec("/b", "/o", "/d", target_modules=("fc1", "lm_head"))


@pytest.mark.parametrize(
    ("arch", "lora_land", "all_linear"),
    [
        ("llama", ("q_proj", "v_proj"), ALL_LINEAR),
        ("phi3", ("qkv_proj",), ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")),
        ("phi", ("q_proj", "v_proj"), ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2")),
    ],
)
def test_tier_defaults_are_named_per_family(arch, lora_land, all_linear):
    assert tier_targets(LORA_LAND, FAMILIES[arch]) == lora_land
    assert tier_targets(TINY, FAMILIES[arch]) == all_linear
    assert choose_settings(BaseShape(2_000_000_000, None, arch), {}).values["target_modules"] == lora_land
    assert choose_settings(BaseShape(1_000_000, None, arch), {}).values["target_modules"] == all_linear


def test_choose_settings_names_given_targets_in_the_base_modules_and_says_so():
    chosen = choose_settings(BaseShape(1_000_000, None, "phi3"), {"target_modules": ["q_proj", "v_proj"]})
    assert chosen.values["target_modules"] == ("qkv_proj",)
    assert "targets q_proj, v_proj are qkv_proj on a phi3 base" in chosen.notice
    with pytest.raises(ValueError, match="'gate_proj'"):
        choose_settings(BaseShape(1_000_000, None, "phi"), {"target_modules": ["gate_proj"]})


def test_read_base_shape_reads_the_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "phi3", "max_position_embeddings": 64}))
    assert read_base_shape(tmp_path) == BaseShape(None, 64, "phi3")


@pytest.fixture(scope="module", params=["phi3", "phi"])
def family_base(request, tmp_path_factory) -> tuple[str, Path]:
    arch = request.param
    return arch, build_tiny_model(tmp_path_factory.mktemp(f"train-{arch}") / "model", arch=arch)


def _spec(base: Path, data: Path, out: Path, targets: tuple[str, ...]) -> TrainJobSpec:
    return TrainJobSpec(
        str(base), str(out), str(data), target_modules=targets, r=4, alpha=8.0, effective_batch_size=8,
        micro_batch_size=4, max_steps=4, max_seq_len=64, learning_rate=2e-2, eval_fraction=0.1,
        progress_interval_s=0.0, device="cpu",
    )


def test_a_target_the_base_lacks_fails_the_job_as_invalid_spec(family_base, task_file, tmp_path):
    arch, base = family_base
    wrong = "gate_proj" if arch == "phi" else "fc1"
    with pytest.raises(InvalidSpecError, match=wrong) as caught:
        run_training(_spec(base, task_file, tmp_path / "out", ("q_proj", wrong)))
    assert caught.value.code is TrainErrorCode.INVALID_SPEC


def test_a_fine_tune_of_each_family_is_served_exactly(family_base, task_file, tmp_path):
    arch, base = family_base
    chosen = choose_settings(read_base_shape(base), {}).values["target_modules"]  # the tiny tier: all linear
    assert chosen == FAMILIES[arch].projections
    adapter_root = tmp_path / "adapters"
    names = {"all": chosen, "qv": ("q_proj", "v_proj")}
    for name, targets in names.items():
        result = run_training(_spec(base, task_file, adapter_root / name, targets))
        assert Path(result.adapter_dir) == adapter_root / name and result.steps == 4
    saved = json.loads((adapter_root / "qv" / "adapter_config.json").read_text())["target_modules"]
    assert sorted(saved) == sorted(resolve_targets(FAMILIES[arch], ("q_proj", "v_proj")))

    engine = Engine(EngineConfig(str(base), str(adapter_root), device="cpu", max_batch_size=8))
    oracle = peft_model(base, adapter_root, list(names))
    requests = [
        GenerationRequest(f"{p}:{a}", prompt, a, SamplingParams(max_new_tokens=MAX_NEW))
        for p, prompt in enumerate(PROMPTS)
        for a in (None, *names)
    ]
    outcomes = run_all(engine, requests)
    for request in requests:
        expected = peft_greedy(oracle, engine.tokenizer, request.prompt, request.adapter_id, MAX_NEW)
        assert outcomes[request.request_id].token_ids == expected, f"{arch} {request.request_id}"
    # training moved the answers: the comparison is not base against base
    assert any(outcomes[f"{p}:all"].token_ids != outcomes[f"{p}:None"].token_ids for p in range(len(PROMPTS)))


def test_a_base_that_soft_caps_its_final_logits_is_not_trained(tmp_path, task_file):
    from gpu_engine.training.errors import BaseUnsupportedError
    from gpu_engine.training.model_setup import load_model

    base = build_tiny_model(tmp_path / "gemma2", arch="gemma2")  # tiny gemma2 sets final_logit_softcapping
    with pytest.raises(BaseUnsupportedError, match="final_logit_softcapping"):
        load_model(_spec(base, task_file, tmp_path / "out", ("q_proj", "v_proj")))
