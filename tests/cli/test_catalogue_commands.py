"""`lorastream ls` and `lorastream topics create --base` (issue 11) against Apache Kafka, and the
tables `ls` prints (no broker)."""

from __future__ import annotations

import asyncio
import time

import pytest
from rich.console import Console

from cli.catalogue_commands import adapters_table, bases_table
from cli.main import main
from schemas import AdapterEvent, encode
from streamer import default_topic_specs, ensure_topics, start_producer
from streamer.catalogue import BaseListing, ServedBase, Tier, encode_served_base
from streamer.model_listing import AdapterListing
from streamer.transport.kafka import KafkaTransport


def _entry(consumer: str, base: str, topic: str, sent_ms: int) -> ServedBase:
    return ServedBase(
        consumer=consumer, base=base, architecture="qwen2", quantization="nf4", max_model_len=4096,
        requests_topic=topic, group_id=f"lorastream-inference.{base}", engine_version="0.1", sent_ms=sent_ms,
    )


def _render(table) -> list[list[str]]:
    """The table's rows as lists of words (cells split on blanks)."""
    console = Console(record=True, width=240)
    console.print(table)
    return _rows(console.export_text())


def _rows(text: str) -> list[list[str]]:
    return [line.replace("│", " ").split() for line in text.splitlines()]


def test_the_tables_show_state_lane_family_and_tier():
    live = _entry("c1", "alpha", "p.requests.base.alpha", 1)
    rows = _render(bases_table([BaseListing("alpha", True, (live,)), BaseListing("gamma", False, ())]))
    assert ["alpha", "live", "1", "qwen2", "nf4", "4096", "p.requests.base.alpha", "lorastream-inference.alpha"] in rows
    assert ["gamma", "not", "live", "0", "-", "-", "-", "-", "-"] in rows
    rows = _render(adapters_table([
        AdapterListing("alpha/x", 3, "alpha", True, Tier.DEVICE), AdapterListing("plain", 1, None, False, None),
    ]))
    assert ["alpha/x", "3", "alpha", "live", "device"] in rows
    assert ["plain", "1", "(default)", "not", "live", "-"] in rows


@pytest.mark.kafka
async def test_ls_lists_bases_and_adapters_live_or_not(kafka_config, topic_names, capsys):
    await ensure_topics(kafka_config, default_topic_specs(topic_names, request_partitions=1))
    producer = await start_producer(kafka_config)
    try:
        entry = _entry("c1", "alpha", topic_names.requests_for("alpha"), time.time_ns() // 1_000_000)
        await producer.send_and_wait(topic_names.catalogue, encode_served_base(entry), key=b"c1")
        for event in (AdapterEvent("alpha/x", 2, "", base_model="alpha"), AdapterEvent("beta/y", 1, "", base_model="beta")):
            await producer.send_and_wait(topic_names.adapters, encode(event), key=event.adapter_id.encode())
    finally:
        await producer.stop()
    argv = ["--bootstrap-servers", kafka_config.bootstrap_servers, "--topic-prefix", topic_names.prefix]

    assert await asyncio.to_thread(main, ["ls", *argv]) == 0
    rows = _rows(capsys.readouterr().out)  # an 80-column table: long cells wrap onto the next line
    assert ["alpha/x", "2", "alpha", "live", "-"] in rows
    assert ["beta/y", "1", "beta", "not", "live", "-"] in rows
    assert any(row[:2] == ["alpha", "live"] for row in rows) and any(row[:2] == ["beta", "not"] for row in rows)

    assert await asyncio.to_thread(main, ["ls", "--base", "beta", *argv]) == 0
    out = capsys.readouterr().out
    assert "beta/y" in out and "alpha/x" not in out


@pytest.mark.kafka
async def test_topics_create_makes_each_named_base_its_lane(kafka_config, topic_names):
    argv = ["--bootstrap-servers", kafka_config.bootstrap_servers, "--topic-prefix", topic_names.prefix]
    assert await asyncio.to_thread(main, ["topics", "create", "--request-partitions", "3", "--base", "alpha", *argv]) == 0
    async with KafkaTransport(kafka_config).admin() as admin:
        described = await admin.describe_topic(topic_names.requests_for("alpha"))
    assert len(described["partitions"]) == 3
    assert await asyncio.to_thread(main, ["topics", "create", "--base", "org/model", *argv]) == 2  # no topic can carry it


@pytest.mark.parametrize(
    ("flags", "message"),
    [([], "--base-lane needs --base-name"), (["--base-name", "org/model"], "cannot name a topic")],
)
def test_serve_refuses_a_lane_it_cannot_name_before_loading_the_model(tmp_path, capsys, flags, message):
    assert main(["serve", "--model", str(tmp_path / "no-model-here"), "--base-lane", *flags]) == 2
    assert message in capsys.readouterr().out
