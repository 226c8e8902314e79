"""`lorastream train` / `train-worker` argument handling (no broker needed)."""

from __future__ import annotations

import argparse

import pytest

from cli.train_commands import add_train_parsers, cmd_train, cmd_train_worker


def kafka_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap-servers", default="127.0.0.1:1")
    parser.add_argument("--topic-prefix", default="lorastream")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="lorastream")
    add_train_parsers(root.add_subparsers(dest="command", required=True), kafka_options)
    return root


def test_both_commands_are_registered_with_their_handlers() -> None:
    args = parser().parse_args(
        [
            "train",
            "--adapter",
            "acme/a",
            "--dataset",
            "d.jsonl",
            "--max-steps",
            "5",
            "--targets",
            "q_proj,o_proj",
            "--quantize",
            "none",
        ]
    )
    assert (args.handler, args.max_steps, args.quantize, args.r) == (cmd_train, 5, "none", None)
    worker = parser().parse_args(["train-worker", "--model", "m", "--adapters", "a", "--threads", "1"])
    assert (worker.handler, worker.threads, worker.group_id) == (cmd_train_worker, 1, "lorastream-training")


@pytest.mark.parametrize("argv", [["--r", "0"], ["--targets", "lm_head"], ["--learning-rate", "-1"]])
def test_invalid_hyperparameters_are_refused_before_connecting(argv, capsys) -> None:
    args = parser().parse_args(["train", "--adapter", "acme/a", "--dataset", "d.jsonl", *argv])
    assert cmd_train(args) == 2
    assert "invalid request" in capsys.readouterr().out


def test_help_exits_cleanly() -> None:
    for command in ("train", "train-worker"):
        with pytest.raises(SystemExit) as caught:
            parser().parse_args([command, "--help"])
        assert caught.value.code == 0


@pytest.mark.parametrize(
    "flags, env, expected",
    [
        ([], None, ()),
        (["--dataset-root", "/srv/a", "--dataset-root", "s3://b/p/"], "/ignored", ("/srv/a", "s3://b/p/")),
        ([], "/srv/a, s3://b/p/ ,", ("/srv/a", "s3://b/p/")),
        (["--dataset-root", "rel"], None, ("{cwd}/rel",)),
    ],
)
def test_dataset_roots_come_from_flags_or_the_environment(flags, env, expected) -> None:
    import os

    from cli.train_commands import dataset_roots

    args = parser().parse_args(["train-worker", "--model", "m", "--adapters", "a", *flags])
    assert dataset_roots(args.dataset_roots, env) == tuple(r.format(cwd=os.getcwd()) for r in expected)
