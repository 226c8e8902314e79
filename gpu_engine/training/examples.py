"""Token sequences to train on: prompt/completion rows whose loss covers the completion only
(prompt positions masked), or plain text packed into blocks for pretraining."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gpu_engine.training.dataset import Row

IGNORE_INDEX = -100  # label of a position that adds nothing to the loss


@dataclass(frozen=True)
class Example:
    """`input_ids` = prompt tokens (with the tokenizer's BOS) + completion tokens (+ EOS), or a
    block of packed text (`first_target` 1: every token but the first is a target).

    Token i is a loss target when i >= first_target: it is predicted from position i - 1.
    """

    input_ids: tuple[int, ...]
    first_target: int  # = number of prompt tokens, at least 1 (token 0 has no predecessor)

    @property
    def num_loss_tokens(self) -> int:
        return len(self.input_ids) - self.first_target

    def labels(self) -> list[int]:
        """Per-position labels in the Hugging Face convention (unshifted, prompt = -100)."""
        return [IGNORE_INDEX] * self.first_target + list(self.input_ids[self.first_target :])


def tokenize_rows(tokenizer, rows: list[Row], max_seq_len: int) -> tuple[list[Example], int]:
    """(examples, number of rows dropped because truncation left them no completion token).

    Prompt and completion are tokenized apart, so the mask boundary is exact; the sequence is
    cut on the right at `max_seq_len`.
    """
    if not rows:
        return [], 0
    prompts = tokenizer([row.prompt for row in rows], add_special_tokens=True)["input_ids"]
    completions = tokenizer([row.completion for row in rows], add_special_tokens=False)["input_ids"]
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    examples, num_dropped = [], 0
    for prompt_ids, completion_ids in zip(prompts, completions, strict=True):
        ids = (list(prompt_ids) + list(completion_ids) + eos)[:max_seq_len]
        first_target = max(1, len(prompt_ids))
        if len(ids) <= first_target:
            num_dropped += 1
            continue
        examples.append(Example(tuple(ids), first_target))
    return examples, num_dropped


def packed_examples(texts_ids: Iterable[Sequence[int]], eos_id: int, block_len_tokens: int) -> list[Example]:
    """Pretraining examples: each text's ids then EOS, concatenated and cut into blocks of
    `block_len_tokens` (the tail shorter than a block is dropped); every token after a block's
    first is a target, so a block trains like Hugging Face's `model(input_ids, labels=input_ids)`.
    """
    if block_len_tokens < 2:
        raise ValueError("block_len_tokens must be >= 2")
    stream: list[int] = []
    for ids in texts_ids:
        stream.extend(ids)
        stream.append(eos_id)
    return [
        Example(tuple(stream[start : start + block_len_tokens]), 1)
        for start in range(0, len(stream) - block_len_tokens + 1, block_len_tokens)
    ]
