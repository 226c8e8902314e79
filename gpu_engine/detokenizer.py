"""Incremental detokenization and stop strings: emit only whole characters, cut at a stop string.

Text is decoded over a short window of recent tokens; a window whose text ends in U+FFFD is an
incomplete UTF-8 sequence and is held back until later tokens complete it. Text that could be
the start of a stop string is held back too, so a stop string never leaks into the output.
"""

from __future__ import annotations

from collections.abc import Sequence

_CONTEXT_TOKENS = 5  # prompt tokens decoded along, so tokenizers that strip leading spaces behave


class IncrementalDetokenizer:
    def __init__(self, tokenizer, prompt_ids: Sequence[int], stop: Sequence[str] = ()) -> None:
        self._tokenizer = tokenizer
        # a fast tokenizer that does no space clean-up decodes exactly as its Rust backend does:
        # call that directly (the transformers wrapper costs several times the decode itself)
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._backend_decode = None if backend is None or getattr(tokenizer, "clean_up_tokenization_spaces", True) \
            else backend.decode
        self._ids = list(prompt_ids[-_CONTEXT_TOKENS:])
        self._prefix_offset = 0
        self._read_offset = len(self._ids)
        self._stop = tuple(s for s in stop if s)
        self._text = ""  # decoded output text so far (complete characters)
        self._num_emitted = 0  # characters of _text already handed out
        self.stopped = False  # a stop string matched; _text is cut before it

    @property
    def text(self) -> str:
        return self._text

    def _decode(self, ids: Sequence[int]) -> str:
        if self._backend_decode is not None:
            return self._backend_decode(ids, skip_special_tokens=True)
        return self._tokenizer.decode(ids, skip_special_tokens=True)

    def _decode_new(self, final: bool) -> str:
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._decode(self._ids[self._prefix_offset :])
        if len(full) > len(prefix) and (final or not full.endswith("\ufffd")):
            self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
            return full[len(prefix) :]
        return ""

    def _held_back(self) -> int:
        """Length of the longest suffix of the unemitted text that starts some stop string."""
        tail = self._text[self._num_emitted :]
        for size in range(min(len(tail), max((len(s) for s in self._stop), default=0) - 1), 0, -1):
            if any(s.startswith(tail[-size:]) for s in self._stop):
                return size
        return 0

    def _take(self, end: int) -> str:
        out = self._text[self._num_emitted : end]
        self._num_emitted = max(self._num_emitted, end)
        return out

    def push(self, token_id: int) -> str:
        """Add one generated token; returns the text now safe to emit (possibly empty)."""
        if self.stopped:
            return ""
        self._ids.append(token_id)
        previous_len = len(self._text)
        self._text += self._decode_new(final=False)
        if self._stop:
            search_from = max(0, previous_len - max(len(s) for s in self._stop) + 1)
            hits = [i for i in (self._text.find(s, search_from) for s in self._stop) if i >= 0]
            if hits:
                self._text = self._text[: min(hits)]
                self.stopped = True
                return self._take(len(self._text))
        return self._take(len(self._text) - self._held_back())

    def finish(self) -> str:
        """The request ends: flush everything held back (incomplete bytes decode as U+FFFD)."""
        if not self.stopped:
            self._text += self._decode_new(final=True)
        return self._take(len(self._text))
