"""Scheduler: who runs in the next step and with how many tokens. Pure Python, no torch.

Each step: every running decode gets its one token first, then unfinished prefills, then waiting
requests are admitted while fewer than `max_batch_size` run and the paged KV cache has free
blocks for the whole prompt, all within `max_step_tokens`; a prompt longer than what is left of
the budget is prefilled in chunks over several steps. KV blocks are taken as a sequence grows
(`block_table.py`). When a decode finds no free block, the newest running sequence not yet
scheduled this step is preempted: its blocks are freed and it goes back to the head of its
tenant's queue, to be computed again from its first token (recompute; it keeps its adapter's
bank slot). A prefill chunk that does not fit is cut to the free blocks, or waits.

Admission is fair across tenants (adapters; None = the base model): with fairness="vtc" the
tenant with the smallest virtual token counter goes next (see fairness.py), FIFO within a tenant;
with fairness="fifo" plain arrival order. Both honour `admit` (a not-ready adapter is skipped for
the step and never blocks the others) and `max_adapters_per_step`. A waiting request whose
deadline has passed is never admitted: `take_expired` hands it back. See docs/scheduling.md.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import NamedTuple

from gpu_engine.block_table import BlockAllocator
from gpu_engine.fairness import Tenant, VirtualTokenCounters, service_cost
from gpu_engine.seq_state import SeqState

FAIRNESS_POLICIES = ("vtc", "fifo")


class ScheduledChunk(NamedTuple):
    """Feed `num_tokens` of `seq`'s pending tokens this step (a tuple: one is made per sequence per step)."""

    seq: SeqState
    num_tokens: int

    @property
    def completes(self) -> bool:
        """After this chunk every token of the sequence is cached: its next token is sampled."""
        return self.num_tokens == self.seq.num_pending


def tenant_of(seq: SeqState) -> Tenant:
    """The fairness tenant of a sequence: its adapter id (None = the base model)."""
    return seq.request.adapter_id


class Scheduler:
    def __init__(
        self,
        max_batch_size: int,
        max_step_tokens: int,
        *,
        max_adapters_per_step: int | None = None,
        fairness: str = "vtc",
        admit: Callable[[SeqState], bool] | None = None,
        clock: Callable[[], float] = time.time,
        num_kv_blocks: int | None = None,
        kv_block_size: int = 16,
    ) -> None:
        """`num_kv_blocks=None`: no KV memory limit (only `max_batch_size` bounds admission)."""
        if max_batch_size < 1 or max_step_tokens < max_batch_size:
            raise ValueError("need max_batch_size >= 1 and max_step_tokens >= max_batch_size")
        if max_adapters_per_step is not None and max_adapters_per_step < 1:
            raise ValueError("max_adapters_per_step must be >= 1 or None")
        if fairness not in FAIRNESS_POLICIES:
            raise ValueError(f"fairness must be one of {FAIRNESS_POLICIES}, got {fairness!r}")
        self.max_step_tokens = max_step_tokens
        self.max_adapters_per_step = max_adapters_per_step
        self.fairness = fairness
        # vtc + cap: how far past a cap-blocked tenant's counter a running adapter may still admit
        # before it must drain (bounds that tenant's wait without shrinking batches to one adapter's
        # leftovers; see docs/scheduling.md)
        self.cap_quantum = float(max_step_tokens)
        self._admit = admit
        self._clock = clock
        self.max_batch_size = max_batch_size
        self.kv_blocks = BlockAllocator(num_kv_blocks if num_kv_blocks is not None else 1 << 62, kv_block_size)
        self.num_preemptions = 0
        self._requeued = 0  # arrival numbers of preempted sequences: below every real arrival
        self._vtc = VirtualTokenCounters()
        self._arrivals = 0
        # waiting: per-tenant FIFO of (arrival, seq); entries of sequences finished while waiting
        # stay in the deque until they reach its head (lazy removal), `_waiting` says who is live
        self._queues: dict[Tenant, deque[tuple[int, SeqState]]] = {}
        self._waiting: dict[str, SeqState] = {}
        self._num_waiting_by: dict[Tenant, int] = {}  # tenants with live waiting work only
        self._running: dict[str, SeqState] = {}  # admission order
        self._num_running_by: dict[Tenant, int] = {}  # tenants with running work only
        self._num_running_adapters = 0  # distinct non-None tenants in _running
        self._deadlines: list[tuple[float, int, SeqState]] = []  # heap over waiting sequences
        self._expired: dict[str, SeqState] = {}  # past deadline, not yet taken

    # --- queries -------------------------------------------------------------------------------

    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        """Sequences not admitted yet (including expired ones that `take_expired` has not taken)."""
        return len(self._waiting) + len(self._expired)

    def has_unfinished(self) -> bool:
        return bool(self._waiting or self._running or self._expired)

    @staticmethod
    def tenant_of(seq: SeqState) -> Tenant:
        return tenant_of(seq)

    def counters(self) -> dict[Tenant, float]:
        """Virtual token counter of every tenant seen so far."""
        return self._vtc.snapshot()

    # --- requests in and out ---------------------------------------------------------------

    def add(self, seq: SeqState) -> None:
        rid = seq.request_id
        if rid in self._waiting or rid in self._running or rid in self._expired:
            raise ValueError(f"request {rid!r} is already scheduled")
        tenant = tenant_of(seq)
        self._vtc.activate(tenant)  # no-op unless the tenant had no work: then its counter is lifted
        arrival = self._arrivals
        self._arrivals += 1
        self._queues.setdefault(tenant, deque()).append((arrival, seq))
        self._waiting[rid] = seq
        self._num_waiting_by[tenant] = self._num_waiting_by.get(tenant, 0) + 1
        deadline = seq.request.deadline_s
        if deadline is not None:
            heapq.heappush(self._deadlines, (deadline, arrival, seq))

    def finish(self, seq: SeqState) -> None:
        """Drop a sequence, waiting or running, and free its KV blocks."""
        rid = seq.request_id
        if self._running.get(rid) is seq:
            self._stop_running(seq)
            self._maybe_idle(tenant_of(seq))
        elif self._waiting.get(rid) is seq:
            self._drop_waiting(seq)
        elif self._expired.get(rid) is seq:
            del self._expired[rid]

    def take_expired(self) -> list[SeqState]:
        """Waiting (never admitted) sequences whose deadline has passed, removed from the queue.

        The caller answers each with FinishReason.EXPIRED. Costs nothing when no deadline is due.
        """
        if self._deadlines:
            self._collect_expired(self._clock())
        if not self._expired:
            return []
        expired = list(self._expired.values())
        self._expired.clear()
        return expired

    # --- one step --------------------------------------------------------------------------

    def schedule(self) -> list[ScheduledChunk]:
        if self._deadlines:
            self._collect_expired(self._clock())  # never admit a request past its deadline
        budget = self.max_step_tokens
        chunks: list[ScheduledChunk] = []
        prefilling = []
        preempted: set[SeqState] = set()
        decode_tenants: list[Tenant] = []
        block_size = self.kv_blocks.block_size
        new_tuple = tuple.__new__  # a ScheduledChunk without its Python-level constructor: half the cost
        for seq in list(self._running.values()):  # the decode loop: per sequence, as little as possible
            computed = seq.num_computed
            if computed + 1 != len(seq.token_ids) or (preempted and seq in preempted):
                prefilling.append(seq)
                continue
            if computed >= len(seq.kv_blocks) * block_size and not self._grow_or_preempt(seq, chunks, preempted):
                continue
            if computed < seq.num_prompt_tokens:  # the last prompt token: charged as prompt
                self._add_chunk(chunks, seq, 1)
                continue
            chunks.append(new_tuple(ScheduledChunk, (seq, 1)))
            decode_tenants.append(seq.request.adapter_id)
        budget -= len(chunks)
        for tenant, count in Counter(decode_tenants).items():
            self._vtc.charge(tenant, count * service_cost(0, 1))
        for seq in prefilling:
            if budget == 0:
                return chunks
            if seq in preempted:
                continue
            num_tokens = min(seq.num_pending, budget, self._room(seq))
            if num_tokens > 0:
                self.kv_blocks.grow(seq.kv_blocks, seq.num_computed + num_tokens)
                budget -= self._add_chunk(chunks, seq, num_tokens)
        if budget > 0 and self._waiting and len(self._running) < self.max_batch_size:
            self._admit_waiting(chunks, budget)
        return chunks

    def _room(self, seq: SeqState) -> int:
        """Tokens the sequence can still take with its blocks and the free ones."""
        capacity = (len(seq.kv_blocks) + min(self.kv_blocks.num_free, 1 << 30)) * self.kv_blocks.block_size
        return capacity - seq.num_computed

    def _grow_or_preempt(self, seq: SeqState, chunks: list[ScheduledChunk], preempted: set[SeqState]) -> bool:
        """A block for the decode of `seq`: preempt the newest running sequence with no chunk this
        step until one is free; False when `seq` itself was the one preempted."""
        while not self.kv_blocks.grow(seq.kv_blocks, seq.num_computed + 1):
            scheduled = {chunk.seq for chunk in chunks}
            victim = next((o for o in reversed(self._running.values()) if o is not seq and o not in scheduled), seq)
            self._preempt(victim)
            preempted.add(victim)
            if victim is seq:
                return False
        return True

    def _preempt(self, seq: SeqState) -> None:
        """Free a running sequence's blocks and put it back at the head of its tenant's queue."""
        self._stop_running(seq)
        seq.num_computed = 0
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self._requeued -= 1
        tenant = tenant_of(seq)
        self._queues.setdefault(tenant, deque()).appendleft((self._requeued, seq))
        self._waiting[seq.request_id] = seq
        self._num_waiting_by[tenant] = self._num_waiting_by.get(tenant, 0) + 1

    def _stop_running(self, seq: SeqState) -> None:
        del self._running[seq.request_id]
        self.kv_blocks.free(seq.kv_blocks)
        seq.kv_blocks = []
        tenant = tenant_of(seq)
        left = self._num_running_by[tenant] - 1
        if left:
            self._num_running_by[tenant] = left
        else:
            del self._num_running_by[tenant]
            if tenant is not None:
                self._num_running_adapters -= 1

    def _admit_waiting(self, chunks: list[ScheduledChunk], budget: int) -> None:
        """Admit waiting sequences, best tenant first, while batch room, KV blocks and budget last.

        A sequence is admitted only when blocks for its whole pending tokens are free (blocks for
        its first chunk are taken now, the rest as it grows); when the best one does not fit,
        admission stops for this step, so a long prompt is not overtaken forever.

        One heap entry per tenant with waiting work: O(tenants + admitted * log tenants), and each
        tenant is skipped (cap, or `admit` said no) at most once per step.
        """
        vtc = self.fairness == "vtc"
        cap = self.max_adapters_per_step
        heap = []
        for tenant in self._num_waiting_by:
            arrival, _ = self._head(tenant)
            heap.append((self._vtc[tenant] if vtc else 0.0, arrival, tenant))
        heapq.heapify(heap)
        hold: float | None = None  # counter of a cap-blocked tenant that is owed service (vtc)
        while heap and budget > 0 and len(self._running) < self.max_batch_size:
            priority, _, tenant = heapq.heappop(heap)
            new_adapter = tenant is not None and tenant not in self._num_running_by
            if hold is not None and tenant is not None and priority > hold + self.cap_quantum:
                # a tenant with less service waits for the adapter cap: admitting still more of a
                # better-served adapter would keep it running and starve that tenant
                continue
            if new_adapter and cap is not None and self._num_running_adapters >= cap:
                if vtc and hold is None:
                    hold = priority
                continue
            _, seq = self._head(tenant)
            if not self.kv_blocks.can_allocate(self.kv_blocks.blocks_for(len(seq.token_ids))):
                break
            if seq.bank_slot is None and self._admit is not None and not self._admit(seq):
                continue  # adapter not ready: the tenant sits this step out, others go on
            self._drop_waiting(seq, idle=False)
            num_tokens = min(seq.num_pending, budget)
            self.kv_blocks.grow(seq.kv_blocks, num_tokens)
            self._running[seq.request_id] = seq
            self._num_running_by[tenant] = self._num_running_by.get(tenant, 0) + 1
            if new_adapter:
                self._num_running_adapters += 1
            budget -= self._add_chunk(chunks, seq, num_tokens)
            if tenant in self._num_waiting_by:
                arrival, _ = self._head(tenant)
                heapq.heappush(heap, (self._vtc[tenant] if vtc else 0.0, arrival, tenant))

    def _add_chunk(self, chunks: list[ScheduledChunk], seq: SeqState, num_tokens: int) -> int:
        """Append a chunk and charge its tenant: prompt tokens fed, plus the token it samples."""
        chunk = ScheduledChunk(seq, num_tokens)
        chunks.append(chunk)
        prompt_tokens = min(num_tokens, max(0, seq.num_prompt_tokens - seq.num_computed))
        self._vtc.charge(tenant_of(seq), service_cost(prompt_tokens, 1 if chunk.completes else 0))
        return num_tokens

    # --- bookkeeping -----------------------------------------------------------------------

    def _head(self, tenant: Tenant) -> tuple[int, SeqState]:
        """The oldest live waiting entry of a tenant that has waiting work (drops dead entries)."""
        queue = self._queues[tenant]
        while True:
            arrival, seq = queue[0]
            if self._waiting.get(seq.request_id) is seq:
                return arrival, seq
            queue.popleft()

    def _drop_waiting(self, seq: SeqState, idle: bool = True) -> None:
        """Remove a live waiting sequence (lazily from its deque); `idle`: it leaves the scheduler."""
        del self._waiting[seq.request_id]
        tenant = tenant_of(seq)
        left = self._num_waiting_by[tenant] - 1
        if left:
            self._num_waiting_by[tenant] = left
            queue = self._queues[tenant]
            if queue[0][1] is seq:
                queue.popleft()
        else:
            del self._num_waiting_by[tenant]
            del self._queues[tenant]  # only dead entries are left in it
            if idle:
                self._maybe_idle(tenant)
        if not self._waiting:
            self._deadlines.clear()  # every entry left is of an admitted or finished sequence

    def _maybe_idle(self, tenant: Tenant) -> None:
        if tenant not in self._num_waiting_by and tenant not in self._num_running_by:
            self._vtc.deactivate(tenant)

    def _collect_expired(self, now: float) -> None:
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            _, _, seq = heapq.heappop(heap)
            if self._waiting.get(seq.request_id) is seq and not seq.num_preemptions:  # started: runs to its end
                self._drop_waiting(seq)
                self._expired[seq.request_id] = seq
        if len(heap) > 2 * len(self._waiting) + 64:  # entries of admitted sequences pile up
            self._deadlines = [e for e in heap if self._waiting.get(e[2].request_id) is e[2]]
            heapq.heapify(self._deadlines)
