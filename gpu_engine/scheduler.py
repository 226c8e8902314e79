"""Scheduler: who runs in the next step and with how many tokens. Pure Python, no torch.

Each step: every running decode gets its one token first, then unfinished prefills, then waiting
requests are admitted while a KV slot is free, all within `max_step_tokens`; a prompt longer than
what is left of the budget is prefilled in chunks over several steps. Running requests are never
preempted.

Admission is fair across tenants (adapters; None = the base model): with fairness="vtc" the
tenant with the smallest virtual token counter goes next (see fairness.py), FIFO within a tenant;
with fairness="fifo" plain arrival order. Both honour `admit` (a not-ready adapter is skipped for
the step and never blocks the others) and `max_adapters_per_step`. A waiting request whose
deadline has passed is never admitted: `take_expired` hands it back. See docs/scheduling.md.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from gpu_engine.fairness import Tenant, VirtualTokenCounters, service_cost
from gpu_engine.seq_state import SeqState
from gpu_engine.slots import SlotAllocator

FAIRNESS_POLICIES = ("vtc", "fifo")


@dataclass(frozen=True)
class ScheduledChunk:
    """Feed `num_tokens` of `seq`'s pending tokens this step."""

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
    ) -> None:
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
        self.slots = SlotAllocator(max_batch_size)
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
        """Drop a sequence, waiting or running, and free its slot."""
        rid = seq.request_id
        if self._running.get(rid) is seq:
            del self._running[rid]
            self.slots.release(seq.kv_slot)
            seq.kv_slot = None
            tenant = tenant_of(seq)
            left = self._num_running_by[tenant] - 1
            if left:
                self._num_running_by[tenant] = left
            else:
                del self._num_running_by[tenant]
                if tenant is not None:
                    self._num_running_adapters -= 1
                self._maybe_idle(tenant)
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
        for seq in self._running.values():
            if seq.num_pending == 1:
                budget -= self._add_chunk(chunks, seq, 1)
            else:
                prefilling.append(seq)
        for seq in prefilling:
            if budget == 0:
                return chunks
            budget -= self._add_chunk(chunks, seq, min(seq.num_pending, budget))
        if budget > 0 and self._waiting and self.slots.can_allocate():
            self._admit_waiting(chunks, budget)
        return chunks

    def _admit_waiting(self, chunks: list[ScheduledChunk], budget: int) -> None:
        """Admit waiting sequences, best tenant first, while a slot and budget last.

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
        while heap and budget > 0 and self.slots.can_allocate():
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
            if self._admit is not None and not self._admit(seq):
                continue  # adapter not ready: the tenant sits this step out, others go on
            self._drop_waiting(seq, idle=False)
            seq.kv_slot = self.slots.allocate()
            self._running[seq.request_id] = seq
            self._num_running_by[tenant] = self._num_running_by.get(tenant, 0) + 1
            if new_adapter:
                self._num_running_adapters += 1
            budget -= self._add_chunk(chunks, seq, min(seq.num_pending, budget))
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
            if self._waiting.get(seq.request_id) is seq:
                self._drop_waiting(seq)
                self._expired[seq.request_id] = seq
        if len(heap) > 2 * len(self._waiting) + 64:  # entries of admitted sequences pile up
            self._deadlines = [e for e in heap if self._waiting.get(e[2].request_id) is e[2]]
            heapq.heapify(self._deadlines)
