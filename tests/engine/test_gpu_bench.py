"""The GPU benchmark's code path, run here on a tiny model on the CPU so it still works when a device run comes."""

from __future__ import annotations

import json

import pytest

from bench import gpu as bench


def test_tiny_cpu_run_writes_json_and_plot(tmp_path):
    out, plot = tmp_path / "gpu.json", tmp_path / "gpu.png"
    code = bench.main([
        "--shape", "tiny", "--device", "cpu", "--dtype", "float32", "--batch-size", "8",
        "--distinct", "1,4,8", "--heavy-distinct", "1,4", "--new-tokens", "3", "--rounds", "1",
        "--json", str(out), "--plot", str(plot),
    ])
    assert code == 0
    result = json.loads(out.read_text())
    assert set(result["ratios"]) == {"land_1_over_base", "land_4_over_base", "land_8_over_base",
                                     "heavy_1_over_base", "heavy_4_over_base"}
    assert all(value > 0 for value in result["tokens_per_s_median"].values())
    assert result["info"]["num_params"] > 0 and result["info"]["lora_backend"] in ("loop", "grouped")
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_arguments_are_checked():
    with pytest.raises(SystemExit):
        bench.parse_args(["--device", "cpu", "--batch-size", "8", "--distinct", "1,16"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--device", "cpu", "--distinct", "0,4"])
    args = bench.parse_args(["--device", "cpu"])
    assert (args.batch_size, args.distinct, args.heavy_distinct, args.shape) == (128, [1, 32, 128], [1, 32], "1b")


def test_one_billion_shape_is_about_one_billion_parameters():
    shape = bench.SHAPES["1b"]
    hidden, inter, layers = shape["hidden"], shape["intermediate"], shape["layers"]
    kv = hidden // shape["heads"] * shape["kv_heads"]
    per_layer = 2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * inter
    assert 0.9e9 < layers * per_layer < 1.1e9
