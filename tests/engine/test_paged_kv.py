"""The paged KV cache: block bookkeeping, admission by free blocks, preemption with recompute,
the packed step indices, and exactness of paged (and padded) steps against PEFT."""

from __future__ import annotations

import pytest
import torch

from gpu_engine.attention import window_mask
from gpu_engine.block_table import BlockAllocator
from gpu_engine.config import EngineConfig
from gpu_engine.engine import Engine
from gpu_engine.lora_ops import LoraStep
from gpu_engine.scheduler import Scheduler
from gpu_engine.seq_state import SeqState
from gpu_engine.step_buffers import SeqChunk, batch_bucket, pack_step, table_bucket
from gpu_engine.step_runner import forward_step
from gpu_engine.types import GenerationRequest, SamplingParams
from tests.engine.engine_helpers import ORACLE_ADAPTERS, peft_greedy, peft_model, run_all


def test_block_allocator_hands_out_fresh_blocks_then_reuses_freed_ones_last_in_first_out():
    blocks = BlockAllocator(5, block_size=4)
    a, b = blocks.allocate(2), blocks.allocate(2)
    assert (a, b, blocks.num_free) == ([0, 1], [2, 3], 1)
    blocks.free(a)
    assert blocks.allocate(3) == [0, 1, 4]
    assert not blocks.can_allocate(1)
    with pytest.raises(ValueError):
        blocks.allocate(1)
    with pytest.raises(ValueError):
        BlockAllocator(3, 4).free([0])


@pytest.mark.parametrize(
    ("have", "num_tokens", "free", "grows", "num_blocks_after"),
    [
        (0, 1, 4, True, 1),
        (1, 4, 4, True, 1),  # still fits the block it has
        (1, 5, 4, True, 2),
        (1, 17, 3, False, 1),  # needs 4 more, 3 free: unchanged
        (2, 8, 0, True, 2),
        (2, 9, 0, False, 2),
    ],
)
def test_grow_takes_blocks_only_when_positions_need_them(have, num_tokens, free, grows, num_blocks_after):
    blocks = BlockAllocator(have + free, block_size=4)
    table = blocks.allocate(have)
    assert blocks.grow(table, num_tokens) is grows
    assert len(table) == num_blocks_after


def seq(request_id: str, prompt_len: int, adapter: str | None = None) -> SeqState:
    return SeqState.from_prompt(GenerationRequest(request_id, "p", adapter), list(range(prompt_len)))


def step(scheduler: Scheduler) -> list[tuple[str, int]]:
    chunks = scheduler.schedule()
    for chunk in chunks:
        completes = chunk.completes
        chunk.seq.num_computed += chunk.num_tokens
        if completes:
            chunk.seq.append_token(0)
    return [(c.seq.request_id, c.num_tokens) for c in chunks]


def test_admission_waits_for_free_blocks_not_for_slots():
    scheduler = Scheduler(8, 64, num_kv_blocks=3, kv_block_size=4)
    for rid, size in (("a", 4), ("b", 8), ("c", 1)):
        scheduler.add(seq(rid, size))
    assert step(scheduler) == [("a", 4), ("b", 8)]  # 1 + 2 blocks: c waits with 6 batch places free
    assert (scheduler.num_running, scheduler.num_waiting, scheduler.kv_blocks.num_free) == (2, 1, 0)


def test_blocks_grow_with_the_sequence_and_are_freed_at_finish():
    scheduler = Scheduler(2, 64, num_kv_blocks=8, kv_block_size=4)
    scheduler.add(a := seq("a", 3))
    step(scheduler)
    assert len(a.kv_blocks) == 1
    step(scheduler)  # position 3: still block 0
    assert len(a.kv_blocks) == 1
    step(scheduler)  # position 4: a second block
    assert len(a.kv_blocks) == 2 and scheduler.kv_blocks.num_free == 6
    scheduler.finish(a)
    assert a.kv_blocks == [] and scheduler.kv_blocks.num_free == 8


def test_out_of_blocks_preempts_the_newest_which_is_recomputed_from_its_first_token():
    scheduler = Scheduler(4, 64, num_kv_blocks=4, kv_block_size=2)
    old, new = seq("old", 4), seq("new", 4)
    scheduler.add(old)
    scheduler.add(new)
    assert step(scheduler) == [("old", 4), ("new", 4)]  # 2 blocks each; every block taken
    assert step(scheduler) == [("old", 1)]  # old needs a third block: new is preempted
    assert (new.kv_blocks, new.num_computed, new.num_preemptions, scheduler.num_preemptions) == ([], 0, 1, 1)
    assert new.num_pending == 5  # its prompt and the token it had sampled
    assert scheduler.num_waiting == 1
    scheduler.finish(old)
    assert step(scheduler) == [("new", 5)]  # back first, all its tokens computed again


def test_preempted_sequence_goes_before_later_arrivals_and_does_not_expire():
    now = [0.0]
    scheduler = Scheduler(4, 64, num_kv_blocks=4, kv_block_size=2, clock=lambda: now[0])
    old = seq("old", 4)
    new = SeqState.from_prompt(GenerationRequest("new", "p", deadline_s=1.0), [1, 2, 3, 4])
    scheduler.add(old)
    scheduler.add(new)
    step(scheduler)
    scheduler.add(later := seq("later", 1))
    step(scheduler)  # new preempted
    now[0] = 5.0
    assert scheduler.take_expired() == []
    scheduler.finish(old)
    assert [rid for rid, _ in step(scheduler)] == ["new", "later"]
    assert later.kv_blocks


def test_a_prefill_chunk_is_cut_to_the_free_blocks():
    scheduler = Scheduler(4, 64, num_kv_blocks=4, kv_block_size=4)
    scheduler.add(a := seq("a", 3))
    step(scheduler)
    scheduler.add(seq("b", 12))  # 3 blocks for its prompt: fits beside a
    assert step(scheduler) == [("a", 1), ("b", 12)]
    assert scheduler.kv_blocks.num_free == 0 and len(a.kv_blocks) == 1


@pytest.mark.parametrize(("rows", "bucket"), [(1, 1), (3, 4), (32, 32), (33, 64), (128, 128), (129, 256)])
def test_batch_buckets(rows, bucket):
    assert batch_bucket(rows) == bucket


@pytest.mark.parametrize(("blocks", "cap", "bucket"), [(1, 64, 1), (3, 64, 4), (5, 6, 6), (9, 8, 9)])
def test_table_buckets(blocks, cap, bucket):
    assert table_bucket(blocks, cap) == bucket


def test_pack_step_lays_out_every_index_of_a_mixed_step():
    chunks = [SeqChunk(0, 1, 5, [7, 3]), SeqChunk(1, 3, 0, [2]), SeqChunk(4, 1, 0, [9])]
    flat, shape = pack_step(chunks, [11, 12, 13, 14, 15], [0, 3, 4], block_size=4, null_block=10)
    parts, at = [], 0
    for size in shape.sizes():
        parts.append(flat[at : at + size])
        at += size
    ids, positions, kv_rows, samples, dec_rows, dec_tables, dec_pos, src, dst, tables, q_pos = parts
    assert ids == [11, 12, 13, 14, 15] and positions == [5, 0, 1, 2, 0]
    assert kv_rows == [3 * 4 + 1, 8, 9, 10, 36]
    assert samples == [0, 3, 4]
    assert (dec_rows, dec_tables, dec_pos) == ([0, 4], [7, 3, 9, 10], [5, 0])  # second table padded with null
    assert (src, dst, tables, q_pos) == ([1, 2, 3], [1, 2, 3], [2], [0, 1, 2])
    assert not shape.decode_rows_are_all_rows


def test_pack_step_pads_a_decode_step_to_its_bucket_with_null_block_rows():
    chunks = [SeqChunk(0, 1, 4, [5, 6]), SeqChunk(1, 1, 1, [2])]
    flat, shape = pack_step(chunks, [7, 8], [0, 1], block_size=4, null_block=9, pad_rows_to=4, pad_table_to=4)
    assert shape.sizes() == [4, 4, 4, 4, 4, 16, 4, 0, 0, 0, 0] and shape.decode_rows_are_all_rows
    assert flat[:12] == [7, 8, 0, 0, 4, 1, 0, 0, 6 * 4 + 0, 2 * 4 + 1, 36, 36]
    assert flat[12:16] == [0, 1, 2, 2]  # padded rows are sampled from a padding row, never read
    assert flat[20:36] == [5, 6, 9, 9, 2, 9, 9, 9] + [9] * 8


@pytest.mark.parametrize("window", [None, 2])
def test_window_mask_is_additive_zero_where_visible(window):
    mask = window_mask(torch.tensor([[0, 2], [3, 0]]), 4, window, torch.float32)
    visible = torch.tensor([[[1, 0, 0, 0], [1, 1, 1, 0]], [[1, 1, 1, 1], [1, 0, 0, 0]]], dtype=torch.bool)
    if window is not None:
        visible &= torch.tensor([[[1, 1, 1, 1], [0, 1, 1, 1]], [[0, 0, 1, 1], [1, 1, 1, 1]]], dtype=torch.bool)
    assert torch.equal(mask == 0, visible) and torch.isinf(mask[~visible]).all()


NAMES = [a[0] for a in ORACLE_ADAPTERS[:3]]
PROMPTS = ("The quick dog runs over the river and the mountain", "Hello café world", "A", "kafka " * 7)


def test_preemption_under_a_tight_kv_budget_keeps_greedy_tokens_equal_to_peft(tiny_model_dir, adapter_root):
    engine = Engine(EngineConfig(str(tiny_model_dir), str(adapter_root), max_batch_size=8, max_model_len=64,
                                 kv_block_size=4, kv_cache_blocks=16))
    requests = [GenerationRequest(f"r{i}", p, a, SamplingParams(max_new_tokens=20, ignore_eos=True))
                for i, (p, a) in enumerate(zip(PROMPTS * 2, [None, *NAMES] * 2))]
    outcomes = run_all(engine, requests)
    assert engine.num_preemptions > 0  # the budget is tight enough to force recomputes
    model = peft_model(tiny_model_dir, adapter_root, NAMES)
    for request in requests:
        expected = peft_greedy(model, engine.tokenizer, request.prompt, request.adapter_id, 20)
        assert outcomes[request.request_id].token_ids == expected, request.request_id
    assert engine._scheduler.kv_blocks.num_free == 16  # every block back


def test_a_padded_decode_step_gives_the_real_rows_the_same_logits(tiny_model_dir, adapter_root):
    engine = Engine(EngineConfig(str(tiny_model_dir), str(adapter_root), max_batch_size=8, max_model_len=64))
    kv_cache = engine.kv_cache
    prompts = [engine.tokenizer(p).input_ids for p in PROMPTS[:3]]
    tables = [[3 * i, 3 * i + 1, 3 * i + 2] for i in range(3)]
    rows, chunks = [], []
    for table, ids in zip(tables, prompts):
        chunks.append(SeqChunk(len(rows), len(ids), 0, table))
        rows += ids
    lora = LoraStep(engine.bank, [], engine.lora_backend)
    with torch.inference_mode():
        flat, shape = pack_step(chunks, rows, [], kv_cache.block_size, kv_cache.null_block)
        forward_step(engine, engine.step_staging.upload(flat, shape), lora)  # the prefill fills the cache
        decode = [SeqChunk(i, 1, len(ids), table) for i, (ids, table) in enumerate(zip(prompts, tables))]
        plain = forward_step(engine, engine.step_staging.upload(*pack_step(
            decode, [5, 6, 7], [0, 1, 2], kv_cache.block_size, kv_cache.null_block)), lora).clone()
        padded = forward_step(engine, engine.step_staging.upload(*pack_step(
            decode, [5, 6, 7], [0, 1, 2], kv_cache.block_size, kv_cache.null_block, pad_rows_to=8, pad_table_to=8)), lora)
    assert padded.shape[0] == 8
    torch.testing.assert_close(padded[:3], plain, rtol=0, atol=1e-5)


@pytest.mark.parametrize("bad", [{"kv_block_size": 0}, {"kv_cache_blocks": 0}, {"device": "cpu", "cuda_graphs": True}])
def test_kv_and_graph_options_are_validated(bad):
    with pytest.raises(ValueError):
        EngineConfig("/m", **bad)


def test_a_kv_cache_that_cannot_hold_one_full_sequence_is_refused(tiny_model_dir):
    with pytest.raises(ValueError, match="kv_cache_blocks"):
        Engine(EngineConfig(str(tiny_model_dir), max_model_len=64, kv_block_size=16, kv_cache_blocks=3))
