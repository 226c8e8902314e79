"""bench.kafka_answer_path: the service's answer path measured without a broker."""

from __future__ import annotations

from bench.kafka_answer_path import main, measure


async def test_slow_steps_send_one_chunk_record_per_step_and_every_last_record():
    result = await measure(streams=8, new_tokens=6, step_ms=30.0, chunk_flush_ms=20.0)
    assert result["records"] == result["chunk_records"] + 2 * 8  # chunk records, Finals, results copies
    assert result["chunk_records"] <= 6 and result["loop_wakeups"] <= 6  # one per engine step at most
    assert result["loop_cpu_us_per_token"] > 0


async def test_fast_steps_pack_several_tokens_per_chunk():
    result = await measure(streams=4, new_tokens=40, step_ms=1.0, chunk_flush_ms=1000.0)
    # the first token alone, then chunks of up to chunk_max_tokens (16): far fewer records than steps
    assert result["chunk_records"] <= 1 + 40 // 16 + 1


def test_command_line(capsys):
    assert main(["--streams", "2", "--new-tokens", "3", "--step-ms", "0", "--repeat", "1"]) == 0
    assert '"loop_cpu_us_per_token"' in capsys.readouterr().out
