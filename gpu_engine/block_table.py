"""BlockAllocator: which paged-KV-cache blocks are free. Pure Python bookkeeping, no torch.

The KV cache is cut into blocks of `block_size` positions; a running sequence owns a block
table (`SeqState.kv_blocks`, position p lives in block `kv_blocks[p // block_size]` at offset
`p % block_size`), grown on demand as it is prefilled and decoded and freed when it finishes
or is preempted. Freed blocks are handed out again first (last in, first out).
"""

from __future__ import annotations


def blocks_for(num_tokens: int, block_size: int) -> int:
    """Blocks needed to hold `num_tokens` positions."""
    return -(-num_tokens // block_size)


class BlockAllocator:
    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError("num_blocks and block_size must be >= 1")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._free: list[int] = []  # freed blocks, reused last-in first-out
        self._next_fresh = 0  # blocks [_next_fresh, num_blocks) were never handed out
        self._num_used = 0

    @property
    def num_free(self) -> int:
        return self.num_blocks - self._num_used

    def blocks_for(self, num_tokens: int) -> int:
        return blocks_for(num_tokens, self.block_size)

    def can_allocate(self, num_blocks: int) -> bool:
        return num_blocks <= self.num_free

    def allocate(self, num_blocks: int) -> list[int]:
        if num_blocks > self.num_free:
            raise ValueError(f"{num_blocks} KV blocks asked for, {self.num_free} free")
        reused = min(num_blocks, len(self._free))
        blocks = [self._free.pop() for _ in range(reused)]
        fresh = num_blocks - reused
        blocks += range(self._next_fresh, self._next_fresh + fresh)
        self._next_fresh += fresh
        self._num_used += num_blocks
        return blocks

    def free(self, blocks: list[int]) -> None:
        if len(blocks) > self._num_used or any(not 0 <= b < self._next_fresh for b in blocks):
            raise ValueError("freeing blocks that are not allocated")
        self._free.extend(reversed(blocks))
        self._num_used -= len(blocks)

    def grow(self, blocks: list[int], num_tokens: int) -> bool:
        """Extend a block table in place to hold `num_tokens` positions; False (unchanged) when
        not enough blocks are free."""
        need = self.blocks_for(num_tokens) - len(blocks)
        if need <= 0:
            return True
        if need > self.num_free:
            return False
        blocks += self.allocate(need)
        return True
