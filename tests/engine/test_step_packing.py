"""The step's host bookkeeping in milliseconds: ordering chunks by adapter (with their LoRA
segments) and the decode-only packer, each against the general path it short-cuts."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from gpu_engine.scheduler import ScheduledChunk
from gpu_engine.segments import find_segments, segment_sort_key
from gpu_engine.step_buffers import SeqChunk, pack_decodes, pack_step
from gpu_engine.step_runner import order_by_adapter


@dataclass(eq=False)
class Seq:
    """The parts of a SeqState that step packing reads."""

    num_computed: int
    token_ids: list[int]
    kv_blocks: list[int] = field(default_factory=list)
    bank_slot: tuple[int, int] | None = None


def decode(slot, position=3) -> ScheduledChunk:
    return ScheduledChunk(Seq(position, list(range(position + 1)), bank_slot=slot), 1)


@pytest.mark.parametrize(
    ("slots", "decode_only"),
    [
        ([None, None, None], True),  # base model only: order kept, no segments
        ([(8, 2), None, (8, 1), (8, 2), (16, 0)], True),
        ([(8, 0)] * 4, True),  # one adapter
        ([(8, 3), (8, 2), (8, 1), (8, 0)], True),  # all distinct, reversed
        ([], True),
    ],
)
def test_order_by_adapter_is_the_stable_sort_and_its_segments(slots, decode_only):
    chunks = [decode(slot) for slot in slots]
    ordered, segments, is_decode_only = order_by_adapter(chunks)
    expected = sorted(chunks, key=lambda c: segment_sort_key(c.seq.bank_slot))
    assert list(ordered) == expected
    assert segments == find_segments([c.seq.bank_slot for c in expected], [1] * len(expected))
    assert is_decode_only is decode_only


@pytest.mark.parametrize(
    "chunk",
    [
        ScheduledChunk(Seq(0, list(range(5))), 5),  # a whole prompt
        ScheduledChunk(Seq(0, list(range(5))), 1),  # one token of a prompt: not the last, nothing sampled
        ScheduledChunk(Seq(2, list(range(5))), 3),  # the rest of a prompt
    ],
)
def test_a_step_with_a_prefill_chunk_is_not_decode_only(chunk):
    chunks = [decode((8, 1)), chunk, decode(None)]
    ordered, segments, decode_only = order_by_adapter(chunks)
    assert not decode_only
    expected_rows = [c.num_tokens for c in sorted(chunks, key=lambda c: segment_sort_key(c.seq.bank_slot))]
    assert segments == find_segments([c.seq.bank_slot for c in ordered], expected_rows)


def random_decodes(rng: random.Random, count: int, block_size: int) -> list[Seq]:
    seqs = []
    for _ in range(count):
        position = rng.randrange(0, 5 * block_size)
        blocks = rng.sample(range(100), position // block_size + 1)
        seqs.append(Seq(position, [rng.randrange(1000) for _ in range(position + 1)], blocks))
    return seqs


@pytest.mark.parametrize(("count", "pad_rows", "pad_table"), [(1, None, None), (5, None, None), (5, 8, None),
                                                              (7, 8, 16), (3, 3, 2), (0, 4, 1)])
def test_pack_decodes_lays_out_what_pack_step_does(count, pad_rows, pad_table):
    block_size, null_block = 4, 100
    seqs = random_decodes(random.Random(count), count, block_size)
    chunks = [SeqChunk(i, 1, s.num_computed, s.kv_blocks) for i, s in enumerate(seqs)]
    input_ids = [s.token_ids[s.num_computed] for s in seqs]
    expected = pack_step(chunks, input_ids, list(range(count)), block_size, null_block, pad_rows, pad_table)
    assert pack_decodes(seqs, block_size, null_block, pad_rows, pad_table) == expected


def test_pack_decodes_refuses_padding_below_the_step():
    with pytest.raises(ValueError):
        pack_decodes(random_decodes(random.Random(0), 3, 4), 4, 100, pad_rows_to=2)


def test_staging_reuses_its_views_for_a_step_of_the_same_shape_with_the_new_values():
    import torch

    from gpu_engine.step_buffers import StagingBuffer

    staging = StagingBuffer(torch.device("cpu"), capacity=8)
    seqs = random_decodes(random.Random(1), 3, 4)
    first = staging.upload(*pack_decodes(seqs, 4, 100))
    first_ids = first.input_ids.tolist()
    for seq in seqs:
        seq.token_ids[seq.num_computed] += 1
    again = staging.upload(*pack_decodes(seqs, 4, 100))
    assert again is first and again.input_ids.tolist() == [i + 1 for i in first_ids]
    grown = staging.upload(*pack_decodes(seqs + random_decodes(random.Random(2), 9, 4), 4, 100))
    assert grown is not first and grown.input_ids.shape == (12,) and staging.num_uploads == 3
