"""Defaults are defined once, in the config dataclasses; derived values are derived there, not in the CLI."""

from __future__ import annotations

import dataclasses

import pytest

from cli.commands import engine_options, serve_config
from cli.main import build_parser
from consumers.config import ServeConfig
from gpu_engine.config import EngineConfig


@pytest.mark.parametrize(
    ("kwargs", "resume_below"),
    [
        ({}, 192),  # 3/4 of the default 256
        ({"max_inflight": 100}, 75),  # raised before: resume_below stayed 192 > 100
        ({"max_inflight": 1}, 0),
        ({"max_inflight": 3}, 2),
        ({"max_inflight": 100, "resume_below": 10}, 10),  # given: kept
        ({"max_inflight": 100, "resume_below": 100}, 100),
    ],
)
def test_resume_below_is_derived_in_the_dataclass(kwargs, resume_below):
    assert ServeConfig(**kwargs).resume_below == resume_below


@pytest.mark.parametrize(
    "kwargs", [{"max_inflight": 10, "resume_below": 11}, {"resume_below": -1}, {"max_inflight": 0}]
)
def test_resume_below_out_of_range_is_refused(kwargs):
    with pytest.raises(ValueError):
        ServeConfig(**kwargs)


def _serve_args(*flags: str):
    return build_parser().parse_args(["serve", "--model", "/models/m", *flags])


def test_serve_flags_default_to_none_so_the_dataclass_decides():
    args = vars(_serve_args())
    config_fields = {f.name for f in dataclasses.fields(ServeConfig)} | {f.name for f in dataclasses.fields(EngineConfig)}
    config_fields |= {"instance_id", "max_adapter_weights_mb", "max_adapter_config_mb"}  # renamed on the way
    restated = {name: value for name, value in args.items() if name in config_fields and value not in (None, [])}
    assert restated == {}, restated


def test_serve_without_flags_builds_the_dataclass_defaults():
    args = _serve_args()
    assert serve_config(args) == ServeConfig()
    engine = EngineConfig(**engine_options(args))
    assert engine == EngineConfig(model_path="/models/m", adapter_root=args.adapters)


@pytest.mark.parametrize(
    ("flags", "field", "value"),
    [
        (["--max-inflight", "100"], "max_inflight", 100),
        (["--max-inflight", "100"], "resume_below", 75),
        (["--chunk-flush-ms", "5"], "chunk_flush_ms", 5.0),
        (["--group-id", "g"], "group_id", "g"),
        (["--dead-letter-max-kb", "2"], "dead_letter_max_original_bytes", 2048),
        (["--commit-stall-s", "7"], "commit_stall_s", 7.0),
    ],
)
def test_serve_flags_reach_the_serve_config(flags, field, value):
    assert getattr(serve_config(_serve_args(*flags)), field) == value


@pytest.mark.parametrize(
    ("flags", "field", "value"),
    [
        (["--max-batch-size", "8"], "max_batch_size", 8),
        (["--dtype", "bfloat16"], "dtype", "bfloat16"),
        (["--fairness", "fifo"], "fairness", "fifo"),
        (["--max-adapter-config-mb", "2"], "max_adapter_config_bytes", 2 << 20),
        (["--max-pending-adapter-loads", "3"], "max_pending_adapter_loads", 3),
    ],
)
def test_serve_flags_reach_the_engine_config(flags, field, value):
    assert getattr(EngineConfig(**engine_options(_serve_args(*flags))), field) == value
