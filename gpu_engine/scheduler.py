"""Scheduler: who runs in the next step and with how many tokens. Pure Python, no torch.

Each step: every running decode gets its one token first, then unfinished prefills, then
waiting requests are admitted (FIFO) while a KV slot is free, all within `max_step_tokens`;
a prompt longer than what is left of the budget is prefilled in chunks over several steps.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from gpu_engine.sequence import Sequence
from gpu_engine.slots import SlotAllocator


@dataclass(frozen=True)
class ScheduledChunk:
    """Feed `num_tokens` of `seq`'s pending tokens this step."""

    seq: Sequence
    num_tokens: int

    @property
    def completes(self) -> bool:
        """After this chunk every token of the sequence is cached: its next token is sampled."""
        return self.num_tokens == self.seq.num_pending


class Scheduler:
    def __init__(self, max_batch_size: int, max_step_tokens: int) -> None:
        if max_batch_size < 1 or max_step_tokens < max_batch_size:
            raise ValueError("need max_batch_size >= 1 and max_step_tokens >= max_batch_size")
        self.max_step_tokens = max_step_tokens
        self.slots = SlotAllocator(max_batch_size)
        self.waiting: deque[Sequence] = deque()
        self.running: dict[str, Sequence] = {}  # admission order

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def finish(self, seq: Sequence) -> None:
        """Drop a sequence, waiting or running, and free its slot."""
        if self.running.pop(seq.request_id, None) is not None:
            self.slots.release(seq.slot)
            seq.slot = None
        elif seq in self.waiting:
            self.waiting.remove(seq)

    def schedule(self) -> list[ScheduledChunk]:
        budget = self.max_step_tokens
        chunks: list[ScheduledChunk] = []
        prefilling = []
        for seq in self.running.values():
            if seq.num_pending == 1:
                chunks.append(ScheduledChunk(seq, 1))
                budget -= 1
            else:
                prefilling.append(seq)
        for seq in prefilling:
            if budget == 0:
                return chunks
            num_tokens = min(seq.num_pending, budget)
            chunks.append(ScheduledChunk(seq, num_tokens))
            budget -= num_tokens
        while self.waiting and budget > 0 and self.slots.can_allocate():
            seq = self.waiting.popleft()
            seq.slot = self.slots.allocate()
            self.running[seq.request_id] = seq
            num_tokens = min(seq.num_pending, budget)
            chunks.append(ScheduledChunk(seq, num_tokens))
            budget -= num_tokens
        return chunks
