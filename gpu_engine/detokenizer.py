"""Incremental detokenization and stop strings: emit only whole characters, cut at a stop string.

Text is decoded over a short window of recent tokens: the tokens of the last emitted piece
(`ids[prefix_offset:read_offset]`) plus those pushed since (`ids[read_offset:]`); the new text is
what decoding the whole window adds to decoding its first part. A window whose text ends in U+FFFD
is an incomplete UTF-8 sequence and is held back until later tokens complete it (`finish()`
flushes it as `decode` gives it). The first window is the last few prompt tokens, so tokenizers
that strip a leading space still give the first generated token its space.

The window is decoded in one of two ways, piece for piece the same text:
- DecodeStream (`tokenizers`), for a fast tokenizer whose decode does no space clean-up, so that
  decoding equals its Rust backend's: the window lives in Rust, one call per token. This is the
  engine's hot path, ~0.5 µs per token where the Python window took ~2 µs.
- Python window, for every other tokenizer (slow ones, clean-up on), a prompt that ends inside a
  character (the stream would emit the prompt's tail), and from the token where a stream fails
  (its decoder rewrote emitted text, e.g. byte fallback meeting an invalid byte).
Both paths keep the window offsets, so `finish()` and a fall-back continue exactly where they are.

Text that could be the start of a stop string is held back too, so a stop string never leaks into
the output; a request without stop strings does no stop work at all.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial

from tokenizers.decoders import DecodeStream

_CONTEXT_TOKENS = 5  # prompt tokens decoded along, so tokenizers that strip leading spaces behave


class IncrementalDetokenizer:
    """One request's generated token ids turned into text, one piece per `push()`."""

    def __init__(self, tokenizer, prompt_ids: Sequence[int], stop: Sequence[str] = ()) -> None:
        self._ids = list(prompt_ids[-_CONTEXT_TOKENS:])
        self._prefix_offset = 0
        self._read_offset = len(self._ids)
        backend = getattr(tokenizer, "backend_tokenizer", None)
        is_backend_exact = backend is not None and not getattr(tokenizer, "clean_up_tokenization_spaces", True)
        # the transformers wrapper costs several times the Rust decode itself: call the backend when exact
        self._decode = partial(backend.decode if is_backend_exact else tokenizer.decode, skip_special_tokens=True)
        self._backend = backend
        self._stream = None
        # a stream whose context decodes to U+FFFD would emit the context itself with the first character
        if is_backend_exact and not self._decode(self._ids).endswith("\ufffd"):
            self._stream = DecodeStream(ids=self._ids, skip_special_tokens=True)
        stops = [s for s in stop if s]
        # one search finds the leftmost stop string; a held suffix must end in a character of one
        self._stop_pattern = re.compile("|".join(map(re.escape, stops))) if stops else None
        self._stop_prefixes = frozenset(s[:size] for s in stops for size in range(1, len(s)))
        self._stop_chars = frozenset("".join(stops))
        self._max_stop_len = max(map(len, stops), default=0)
        self._held = ""  # decoded text not emitted yet: it could be the start of a stop string
        self.stopped = False  # a stop string matched; the output ended just before it

    @property
    def uses_decode_stream(self) -> bool:
        """True while this request decodes through the Rust DecodeStream (the fast path)."""
        return self._stream is not None

    def _decode_new(self, final: bool) -> str:
        """Python window: the text the tokens since `read_offset` add (all of it, U+FFFD too, if `final`)."""
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._decode(self._ids[self._prefix_offset :])
        if len(full) > len(prefix) and (final or not full.endswith("\ufffd")):
            self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
            return full[len(prefix) :]
        return ""

    def _held_back(self, text: str) -> int:
        """Length of the longest suffix of `text` that starts some stop string."""
        if not text or text[-1] not in self._stop_chars:
            return 0
        for size in range(min(len(text), self._max_stop_len - 1), 0, -1):
            if text[-size:] in self._stop_prefixes:
                return size
        return 0

    def _cut_at_stop(self, new_text: str) -> str:
        """Emit `new_text` after the held text, up to a stop string or the start of a possible one.

        A stop string can only start in the held text or in `new_text`: text emitted earlier had no
        suffix that starts a stop string (the longest such suffix was held back)."""
        text = self._held + new_text
        match = self._stop_pattern.search(text)
        if match is not None:
            self.stopped = True
            self._held = ""
            return text[: match.start()]
        num_held = self._held_back(text)
        self._held = text[len(text) - num_held :]
        return text[: len(text) - num_held]

    def push(self, token_id: int) -> str:
        """Add one generated token; returns the text now safe to emit (possibly empty)."""
        if self.stopped:
            return ""
        self._ids.append(token_id)
        if self._stream is None:
            text = self._decode_new(final=False)
        else:
            try:
                text = self._stream.step(self._backend, token_id)
            except Exception:  # the decoder rewrote text already emitted (DecodeStream's InvalidPrefix)
                self._stream = None
                text = self._decode_new(final=False)
            else:
                if text is None:  # an incomplete character: the stream holds its tokens
                    return ""
                self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        if self._stop_pattern is None:
            return text
        return self._cut_at_stop(text) if text else ""

    def finish(self) -> str:
        """The request ends: flush everything held back (incomplete bytes decode as U+FFFD)."""
        if self.stopped:
            return ""
        text = self._held + (self._decode_new(final=True) if self._read_offset < len(self._ids) else "")
        self._held = ""
        return text
