"""`lorastream topics` (issue 17 items 4 and 8): its help names every action, `list` shows reply
topics' idle time, `gc` deletes dead clients' reply topics, and `send` interrupted with Ctrl-C
deletes its reply topic."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest

from cli.main import build_parser, main
from streamer import TopicSpec, default_topic_specs, ensure_topics, list_topics
from tests.conftest import ROOT


def test_topics_help_lists_every_action(capsys) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["topics", "--help"])
    usage = capsys.readouterr().out
    for action in ("create", "list", "delete", "gc", "--idle-s", "--dry-run"):
        assert action in usage


async def test_topics_list_shows_age_and_gc_deletes_the_idle(kafka_config, topic_names, capsys) -> None:
    idle = topic_names.replies_for("gone")
    await ensure_topics(kafka_config, [TopicSpec(idle)])
    argv = ["--bootstrap-servers", kafka_config.bootstrap_servers, "--topic-prefix", topic_names.prefix]

    assert await asyncio.to_thread(main, ["topics", "list", *argv]) == 0
    assert f"{idle}  (no records)" in capsys.readouterr().out
    assert await asyncio.to_thread(main, ["topics", "gc", "--dry-run", *argv]) == 0
    assert f"would delete 1 idle reply topic(s)\n  {idle}" in capsys.readouterr().out
    assert idle in await list_topics(kafka_config)

    assert await asyncio.to_thread(main, ["topics", "gc", "--idle-s", "60", *argv]) == 0
    assert idle in capsys.readouterr().out
    assert idle not in await list_topics(kafka_config)


async def test_send_interrupted_by_ctrl_c_deletes_its_reply_topic(kafka_config, topic_names) -> None:
    """No service answers: `send` waits until SIGINT, then must close its client on the way out."""
    await ensure_topics(kafka_config, default_topic_specs(topic_names))
    prefix = f"{topic_names.prefix}.replies."
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli", "send", "hello",
        "--bootstrap-servers", kafka_config.bootstrap_servers, "--topic-prefix", topic_names.prefix,
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            while not await list_topics(kafka_config, prefix=prefix):
                await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # past start(): the request is out, `send` waits for its answer
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            _, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 130, stderr.decode()[-2000:]
    assert await list_topics(kafka_config, prefix=prefix) == []
