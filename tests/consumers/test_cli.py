"""Every command answers --help, and the CLI module itself does not pull in torch."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from cli.main import BENCHMARKS, main

COMMANDS = ["serve", "broker", "topics", "send", "tail", "demo", "bench", "train", "train-worker", "eval", "land"]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help(command, capsys):
    argv = ["--help"] if command is None else [command, "--help"]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: lorastream")
    if command is None:
        assert all(c in out for c in COMMANDS)


def test_bench_names_cover_each_benchmark():
    assert set(BENCHMARKS) == {"engine", "cache", "kafka", "train", "gpu", "gateway", "fleet", "all"}
    for module in BENCHMARKS.values():  # each names a benchmark module with a command line
        assert callable(importlib.import_module(module).main), module


def test_cli_import_leaves_torch_out():
    code = "import sys, cli.main, cli.commands; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr


def test_fetch_max_wait_reaches_the_kafka_config(monkeypatch):
    from cli.main import build_parser
    from cli.commands import kafka_config

    args = build_parser().parse_args(["send", "hi", "--fetch-max-wait-ms", "500"])
    assert kafka_config(args).fetch_max_wait_ms == 500
    monkeypatch.setenv("LORASTREAM_FETCH_MAX_WAIT_MS", "250")
    assert kafka_config(build_parser().parse_args(["send", "hi"])).fetch_max_wait_ms == 250


def test_kafka_security_settings_default_from_the_environment(monkeypatch):
    from cli.main import build_parser
    from cli.commands import kafka_config

    for name, value in {
        "LORASTREAM_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "LORASTREAM_SASL_MECHANISM": "SCRAM-SHA-256",
        "LORASTREAM_SASL_USERNAME": "alice",
        "LORASTREAM_SASL_PASSWORD": "secret",
    }.items():
        monkeypatch.setenv(name, value)
    config = kafka_config(build_parser().parse_args(["tail"]))
    assert (config.security_protocol, config.sasl_mechanism, config.sasl_plain_username) == (
        "SASL_PLAINTEXT", "SCRAM-SHA-256", "alice",
    )
    assert config.sasl_plain_password == "secret"
