"""Which examples each optimizer step trains on, and how they are cut into micro-batches.

Pure Python. The examples form an endless stream of seeded per-epoch permutations; step s takes
stream items [s*E, (s+1)*E), so any step's batch is known without replaying the ones before it
(resume needs no data-loader state). Within a step the E examples are sorted by length before
being cut into micro-batches of M: the step's gradient is the same as for any other split of
those E examples (the loss is summed over them), but each micro-batch pads to a near length.
"""

from __future__ import annotations

import random


class BatchPlan:
    def __init__(self, lengths: list[int], effective_batch_size: int, micro_batch_size: int, seed: int) -> None:
        if not lengths:
            raise ValueError("no examples to plan batches for")
        if effective_batch_size < 1 or micro_batch_size < 1:
            raise ValueError("batch sizes must be >= 1")
        self.lengths = lengths
        self.effective_batch_size = effective_batch_size
        self.micro_batch_size = micro_batch_size
        self.seed = seed
        self._permutations: dict[int, list[int]] = {}

    @property
    def num_examples(self) -> int:
        return len(self.lengths)

    def _permutation(self, epoch: int) -> list[int]:
        order = self._permutations.get(epoch)
        if order is None:
            order = list(range(self.num_examples))
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
            self._permutations = {epoch: order}  # steps walk forward: keep only the current epoch
        return order

    def step_indices(self, step: int) -> list[int]:
        """The E example indices of optimizer step `step` (0-based), in stream order."""
        start = step * self.effective_batch_size
        n = self.num_examples
        return [self._permutation(i // n)[i % n] for i in range(start, start + self.effective_batch_size)]

    def micro_batches(self, step: int) -> list[list[int]]:
        """The step's examples, longest first, cut into micro-batches of `micro_batch_size`."""
        ordered = sorted(self.step_indices(step), key=lambda i: (-self.lengths[i], i))
        m = self.micro_batch_size
        return [ordered[i : i + m] for i in range(0, len(ordered), m)]


def padded_tokens(lengths: list[int], micro_batches: list[list[int]]) -> int:
    """Token positions computed for `micro_batches` once each is padded to its longest row."""
    return sum(len(mb) * max(lengths[i] for i in mb) for mb in micro_batches)
