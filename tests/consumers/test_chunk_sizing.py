"""Chunks sized by the stream's rate: the rule (`chunk_due`) and the writer that applies it after
each burst of engine events (first token at once, fast streams in larger chunks, slow streams
token by token, a stalled stream flushed by the one hold timer, Final after its chunks)."""

from __future__ import annotations

import asyncio

import pytest

from consumers.config import ServeConfig
from consumers.inference.answer import Answer, chunk_due
from consumers.inference.answer_writer import AnswerWriter
from consumers.metrics import Metrics
from schemas import ChunkBatch, Final, FinishReason, InferenceRequest, ReplyAddress, TokenChunk, decode_reply
from streamer import TopicNames
from streamer.reply_topics import ReplyTopicDirectory

HOLD_S, MAX_TOKENS = 0.020, 16


@pytest.mark.parametrize(
    ("pending", "held_s", "interval_s", "due"),
    [
        (0, 1.0, 0.001, False),  # nothing to send
        (1, 0.0, None, False),  # no rate yet: hold until a bound
        (1, 0.020, None, True),  # held for the whole hold: leaves
        (1, 0.0, 0.040, True),  # slow stream (40 ms per token): the next token comes after the hold
        (1, 0.0, 0.021, True),  # just slower than the hold
        (1, 0.0, 0.020, False),  # exactly one hold per token: the next token may still make it
        (1, 0.0, 0.005, False),  # fast stream: wait for more tokens
        (3, 0.010, 0.005, False),  # 15 ms < 20 ms: one more fits
        (4, 0.016, 0.005, True),  # the next would come at 21 ms, after the hold
        (15, 0.014, 0.001, False),  # under both bounds
        (16, 0.0, 0.001, True),  # max tokens reached
        (40, 0.0, None, True),  # over max tokens (one event carrying many)
    ],
)
def test_chunk_due(pending, held_s, interval_s, due):
    assert chunk_due(pending, held_s, interval_s, HOLD_S, MAX_TOKENS) is due


@pytest.mark.parametrize(("interval_s", "tokens_per_chunk"), [(0.001, 16), (0.003, 7), (0.0045, 5), (0.040, 1)])
def test_steady_stream_chunk_size_follows_its_rate(interval_s, tokens_per_chunk):
    """A stream at a steady rate, checked after every token: chunks carry ~hold / interval tokens."""
    sizes, pending, held_s = [], 0, 0.0
    for _ in range(200):
        pending, held_s = pending + 1, held_s + (interval_s if pending else 0.0)
        if chunk_due(pending, held_s, interval_s, HOLD_S, MAX_TOKENS):
            sizes.append(pending)
            pending, held_s = 0, 0.0
    assert set(sizes[1:-1]) == {tokens_per_chunk}


# ---- the writer ----------------------------------------------------------------------------------


class FakeOutbox:
    def __init__(self) -> None:
        self.records: list[tuple[str, object]] = []

    def put(self, topic, value, *, key=None, partition=None, on_done=None):
        self.records.append((topic, decode_reply(value)))

    def chunks(self, request_id: str) -> list[TokenChunk]:
        out = []
        for _, record in self.records:
            batch = record.chunks if isinstance(record, ChunkBatch) else [record]
            out += [c for c in batch if isinstance(c, TokenChunk) and c.request_id == request_id]
        return out


REPLIES = ReplyAddress("replies.a", 0)


def make_writer(outbox: FakeOutbox, **config) -> AnswerWriter:
    loop = asyncio.get_running_loop()
    return AnswerWriter(
        outbox=outbox, loop=loop, topics=TopicNames("t"), config=ServeConfig(**config), metrics=Metrics(),
        directory=ReplyTopicDirectory(lambda topic: None), lookup=lambda request_id: None,
        abort=lambda request_id: None, settled=lambda answer: None,
    )


def make_answer(request_id: str) -> Answer:
    request = InferenceRequest(request_id=request_id, prompt="p", reply_to=REPLIES, batch_chunks=True)
    return Answer(request, b"raw", "requests", 0, 0, attempt=0)


def step(writer: AnswerWriter, tokens: dict[Answer, int], now_s: float) -> None:
    """One engine step's events for these answers, then the end of the batch."""
    for answer, token_id in tokens.items():
        answer.add(f"t{token_id} ", (token_id,), now_s)
        writer.tokens_added(answer)
    writer.flush_due()


async def test_slow_stream_sends_each_token_at_the_end_of_its_step():
    outbox = FakeOutbox()
    writer = make_writer(outbox, chunk_flush_ms=20.0)
    answers = [make_answer(f"r{i}") for i in range(3)]
    loop = asyncio.get_running_loop()
    for n in range(4):  # steps 50 ms apart, as a loaded CPU decodes
        step(writer, {a: n for a in answers}, loop.time() - 0.050 * (3 - n))
        await asyncio.sleep(0)  # the batcher's end of iteration
    for answer in answers:
        assert [c.token_ids for c in outbox.chunks(answer.request_id)] == [[0], [1], [2], [3]]
    assert all(isinstance(record, ChunkBatch) for _, record in outbox.records)  # one record per step
    assert len(outbox.records) == 4


async def test_fast_stream_gets_fewer_larger_chunks_and_a_stall_is_flushed_by_the_timer():
    outbox = FakeOutbox()
    writer = make_writer(outbox, chunk_flush_ms=40.0)
    answer = make_answer("fast")
    start_s = asyncio.get_running_loop().time()
    for n in range(6):  # a token every 2 ms: the first leaves at once, the rest are held
        step(writer, {answer: n}, start_s + 0.002 * n)
    await asyncio.sleep(0)
    assert [c.token_ids for c in outbox.chunks("fast")] == [[0]]
    await asyncio.sleep(0.1)  # the stream stalls: the hold timer sends what waits
    assert [c.token_ids for c in outbox.chunks("fast")] == [[0], [1, 2, 3, 4, 5]]


async def test_final_follows_its_held_tokens():
    outbox = FakeOutbox()
    writer = make_writer(outbox, chunk_flush_ms=1000.0)
    answer = make_answer("r1")
    now_s = asyncio.get_running_loop().time()
    for n in range(3):
        step(writer, {answer: n}, now_s + 0.001 * n)
    writer.final(answer, FinishReason.LENGTH)
    await asyncio.sleep(0)
    replies = [record for topic, record in outbox.records if topic == REPLIES.topic]
    assert isinstance(replies[-1], Final) and replies[-1].seq == 2 and replies[-1].text == "t0 t1 t2 "
    assert [(c.seq, c.token_ids) for c in outbox.chunks("r1")] == [(0, [0]), (1, [1, 2])]


async def test_max_tokens_bound_sends_a_full_chunk_without_waiting():
    outbox = FakeOutbox()
    writer = make_writer(outbox, chunk_flush_ms=1000.0, chunk_max_tokens=4)
    answer = make_answer("r1")
    now_s = asyncio.get_running_loop().time()
    for n in range(9):
        step(writer, {answer: n}, now_s + 0.0001 * n)
    await asyncio.sleep(0)
    assert [c.token_ids for c in outbox.chunks("r1")] == [[0], [1, 2, 3, 4], [5, 6, 7, 8]]
