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


class _ScriptedEvents:
    """A TrainingJob's face to `follow_job`: a job id, its events, the last one."""

    def __init__(self, events) -> None:
        self.job_id, self._events, self.last_event = "job-1234abcd", events, None

    async def events(self, *, idle_timeout_s=None):
        for event in self._events:
            self.last_event = event
            yield event


def _long_job_events():
    from schemas import JobState, TrainingEvent

    def event(state, **fields):
        return TrainingEvent(job_id="job-1234abcd", state=state, ts_ms=1, **fields)

    notice = "chosen for a 1.0M-parameter base: r 16, alpha 32, lr 0.005, all-linear"
    return [
        event(JobState.QUEUED),
        event(JobState.STARTED, step=0, total_steps=3000, quantization="none", notice=notice),
        event(JobState.PROGRESS, step=25, total_steps=3000, loss=2.25, learning_rate=1e-4, eta_s=750.0, tokens_per_s=900.0),
        event(JobState.PROGRESS, step=2500, total_steps=3000, loss=0.5, learning_rate=5e-5, eta_s=125.0),
        event(JobState.COMPLETED, step=3000, total_steps=3000, loss=0.25, adapter_id="acme/sql", adapter_uri="file:///a"),
    ]


async def test_piped_progress_is_a_line_per_event_with_the_whole_total_and_an_eta() -> None:
    """Issue 17: piped, the bar showed only its final state, cut (`25/30…`), as `training (none)`."""
    import io

    from rich.console import Console

    from cli.train_commands import follow_job

    out = io.StringIO()
    code = await follow_job(
        _ScriptedEvents(_long_job_events()), out=Console(file=out, width=60), label="acme/sql (job job-1234)"
    )
    lines = out.getvalue().splitlines()
    assert code == 0
    assert lines[0] == "acme/sql (job job-1234) queued"
    assert lines[1].startswith("chosen for a 1.0M-parameter base")
    assert lines[2] == "acme/sql (job job-1234) started 0/3000"
    assert lines[3] == "acme/sql (job job-1234) progress 25/3000 eta 12m30s loss 2.2500  lr 1.00e-04  900 tok/s"
    assert lines[4] == "acme/sql (job job-1234) progress 2500/3000 eta 2m05s loss 0.5000  lr 5.00e-05"
    assert lines[5].startswith("completed acme/sql")


async def test_the_terminal_bar_is_labelled_with_the_adapter_and_never_cuts_the_total() -> None:
    import io

    from rich.console import Console

    from cli.train_commands import JobProgress

    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True, color_system=None)
    view = JobProgress(console, "acme/sql (job job-1234)")
    with view:
        for event in _long_job_events()[:4]:
            view.show(event)
        view.bar.refresh()
    rendered = out.getvalue()
    assert "acme/sql (job job-1234)" in rendered and "training (none)" not in rendered
    assert "2500/3000" in rendered and "eta 2m05s" in rendered


def test_base_lane_names_the_workers_topic_and_group(tmp_path) -> None:
    from cli.train_commands import _worker_config
    from streamer import TopicNames

    argv = ["train-worker", "--model", str(tmp_path / "m"), "--adapters", "a", "--base-name", "alpha"]
    shared, lane = (_worker_config(parser().parse_args(argv + extra)) for extra in ([], ["--base-lane"]))
    assert (shared.requests_topic(TopicNames()), shared.consumer_group) == ("lorastream.training.requests", "lorastream-training")
    assert (lane.requests_topic(TopicNames()), lane.consumer_group) == (
        "lorastream.training.requests.base.alpha", "lorastream-training.alpha",
    )  # fmt: skip


@pytest.mark.parametrize("extra", [["--base-name", "org/model"], []])
def test_a_lane_without_a_topic_safe_base_name_is_refused_before_connecting(extra, capsys) -> None:
    """Without --base-name the lane is named by the model directory: `m:q` cannot name a topic."""
    args = parser().parse_args(["train-worker", "--model", "/models/m:q", "--adapters", "a", "--base-lane", *extra])
    assert cmd_train_worker(args) == 2
    assert "cannot name a topic" in capsys.readouterr().out
