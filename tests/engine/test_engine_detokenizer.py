"""Incremental detokenization, table-driven: a byte tokenizer (one token per UTF-8 byte) on the Python
window path, then real fast tokenizers built locally on the DecodeStream path, checked piece by piece
against the window path and in full against `tokenizer.decode`."""

from __future__ import annotations

import random

import pytest

from gpu_engine.detokenizer import _CONTEXT_TOKENS, IncrementalDetokenizer
from gpu_engine.tiny import build_tiny_tokenizer


class ByteTokenizer:
    def decode(self, ids, skip_special_tokens=True):
        return bytes(ids).decode("utf-8", errors="replace")


def stream(text: str, stop=()) -> tuple[list[str], IncrementalDetokenizer]:
    detok = IncrementalDetokenizer(ByteTokenizer(), list(b"prompt"), stop)
    pieces = [detok.push(b) for b in text.encode()]
    pieces.append(detok.finish())
    return pieces, detok


@pytest.mark.parametrize("text", ["plain ascii", "café", "日本語", "a😀b", "😀😀", "ß€→ü"])
def test_multibyte_characters_are_never_split(text):
    pieces, _ = stream(text)
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_incomplete_bytes_are_held_until_complete():
    detok = IncrementalDetokenizer(ByteTokenizer(), [], ())
    emoji = "😀".encode()
    assert [detok.push(b) for b in emoji] == ["", "", "", "😀"]


def test_truncated_character_is_flushed_as_replacement_at_the_end():
    detok = IncrementalDetokenizer(ByteTokenizer(), [], ())
    assert detok.push(ord("a")) == "a"
    assert detok.push("😀".encode()[0]) == ""
    assert detok.finish() == "\ufffd"


@pytest.mark.parametrize(
    ("text", "stop", "expected", "stopped"),
    [
        ("hello world", ("world",), "hello ", True),
        ("hello world", ("xyz",), "hello world", False),
        ("hello world", ("o w", "ld"), "hell", True),
        ("abcabd", ("abd",), "abc", True),
        ("nope", ("nope",), "", True),
        ("café!", ("é",), "caf", True),
        ("ends with sto", ("stop",), "ends with sto", False),
    ],
)
def test_stop_strings(text, stop, expected, stopped):
    pieces, detok = stream(text, stop)
    assert "".join(pieces) == expected
    assert detok.stopped is stopped


def test_stop_string_prefix_is_held_back_until_decided():
    detok = IncrementalDetokenizer(ByteTokenizer(), [], ("STOP",))
    assert [detok.push(b) for b in b"aST"] == ["a", "", ""]
    assert detok.push(ord("x")) == "STx"


# --- real fast tokenizers: the DecodeStream path, checked against the Python window path and decode

class WindowOnly:
    """A tokenizer seen without its Rust backend, as a slow tokenizer is: forces the window path."""

    def __init__(self, tokenizer):
        self.decode = tokenizer.decode


def _llama_like_tokenizer(words):
    """Metaspace + byte-fallback BPE with Llama's decoder (which strips the text's leading space)."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"<0x{b:02X}>": 3 + b for b in range(256)}
    merges = []
    for word in words:  # each word a chain of merges, left to right
        piece = word[0]
        vocab.setdefault(piece, len(vocab))
        for char in word[1:]:
            vocab.setdefault(char, len(vocab))
            if piece + char not in vocab:
                merges.append((piece, char))
                vocab[piece + char] = len(vocab)
            piece += char
    tok = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", clean_up_tokenization_spaces=False
    )


@pytest.fixture(scope="module")
def byte_level(tmp_path_factory):
    """The tiny models' tokenizer: GPT-2-style byte-level BPE, multibyte characters split into bytes."""
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("byte_level")
    build_tiny_tokenizer(out, vocab_size=512)
    return AutoTokenizer.from_pretrained(str(out))


@pytest.fixture(scope="module")
def llama_like():
    return _llama_like_tokenizer(["▁Hello", "▁world", "▁the", "▁cat", "▁café", "▁über"])


@pytest.fixture(params=["byte_level", "llama_like"])
def fast_tokenizer(request):
    return request.getfixturevalue(request.param)


def detokenize(tokenizer, prompt_ids, output_ids, stop=()) -> tuple[list[str], IncrementalDetokenizer]:
    detok = IncrementalDetokenizer(tokenizer, prompt_ids, stop)
    pieces = [detok.push(t) for t in output_ids]
    pieces.append(detok.finish())
    return pieces, detok


def reference_text(tokenizer, prompt_ids, output_ids) -> str:
    """`decode(output_ids)` as the output reads after the prompt: decoded after the prompt context."""
    context = list(prompt_ids[-_CONTEXT_TOKENS:])
    prefix = tokenizer.decode(context, skip_special_tokens=True)
    full = tokenizer.decode(context + list(output_ids), skip_special_tokens=True)
    assert full.startswith(prefix)
    return full[len(prefix) :]


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


def test_fast_tokenizers_take_the_decode_stream_path(fast_tokenizer):
    assert not fast_tokenizer.clean_up_tokenization_spaces
    assert IncrementalDetokenizer(fast_tokenizer, encode(fast_tokenizer, "Hello")).uses_decode_stream
    assert not IncrementalDetokenizer(WindowOnly(fast_tokenizer), encode(fast_tokenizer, "Hello")).uses_decode_stream
    assert not IncrementalDetokenizer(ByteTokenizer(), list(b"Hello")).uses_decode_stream


@pytest.mark.parametrize("seed", range(4))
def test_random_tokens_stream_piece_by_piece_as_the_window_path(fast_tokenizer, seed):
    """Random ids (special tokens, stray bytes, invalid UTF-8): the same pieces on both paths."""
    rng = random.Random(seed)

    def draw(num_tokens):
        return [
            rng.choice(fast_tokenizer.all_special_ids) if rng.random() < 0.1 else rng.randrange(len(fast_tokenizer))
            for _ in range(num_tokens)
        ]

    for _ in range(150):
        prompt_ids, output_ids = draw(rng.randint(0, 8)), draw(rng.randint(0, 40))
        pieces, _ = detokenize(fast_tokenizer, prompt_ids, output_ids)
        assert pieces == detokenize(WindowOnly(fast_tokenizer), prompt_ids, output_ids)[0]


@pytest.mark.parametrize("seed", range(4))
def test_random_byte_level_tokens_decode_exactly(byte_level, seed):
    """Byte-level decoding is lossy UTF-8 over all bytes, so even random ids stream to exactly `decode`."""
    rng = random.Random(seed)
    specials = byte_level.all_special_ids
    num_decode_stream = 0
    for _ in range(150):
        prompt_ids = encode(byte_level, rng.choice(["Hello", "Une café", "日本語", "a 😀"]))
        output_ids = [rng.choice(specials) if rng.random() < 0.1 else rng.randrange(len(byte_level)) for _ in range(40)]
        pieces, detok = detokenize(byte_level, prompt_ids, output_ids)
        num_decode_stream += detok.uses_decode_stream
        assert "".join(pieces) == reference_text(byte_level, prompt_ids, output_ids)
        assert "".join(pieces) == byte_level.decode(output_ids, skip_special_tokens=True)
    assert num_decode_stream == 150


_TEXTS = [
    "plain ascii, nothing else.",
    " café naïve über señor",
    " 日本語のテキスト",
    " a😀b 😀😀 end",
    " family 👩\u200d👩\u200d👧 flag 🇫🇷",
    " ß€→ü mixed with ascii",
]


@pytest.mark.parametrize("text", _TEXTS)
def test_text_streams_back_exactly_without_split_characters(fast_tokenizer, text):
    prompt_ids = encode(fast_tokenizer, "Once upon a time")
    output_ids = encode(fast_tokenizer, "Once upon a time" + text)[len(prompt_ids) :]
    assert fast_tokenizer.decode(prompt_ids + output_ids) == "Once upon a time" + text  # a clean split
    pieces, detok = detokenize(fast_tokenizer, prompt_ids, output_ids)
    assert detok.uses_decode_stream
    assert "".join(pieces) == text == reference_text(fast_tokenizer, prompt_ids, output_ids)
    assert all("\ufffd" not in p for p in pieces)
    assert pieces == detokenize(WindowOnly(fast_tokenizer), prompt_ids, output_ids)[0]


def test_multibyte_character_split_across_tokens_is_emitted_once_complete(byte_level):
    emoji_ids = encode(byte_level, "😀")
    assert len(emoji_ids) > 1  # the emoji's bytes are split over several tokens
    pieces, detok = detokenize(byte_level, encode(byte_level, "Hi "), emoji_ids)
    assert detok.uses_decode_stream
    assert pieces == [""] * (len(emoji_ids) - 1) + ["😀", ""]


def test_special_tokens_in_the_middle_are_skipped(byte_level):
    specials = [byte_level.eos_token_id, byte_level.bos_token_id, byte_level.pad_token_id]
    hello_ids = encode(byte_level, " Hello")
    output_ids = hello_ids + specials + encode(byte_level, " world")
    pieces, detok = detokenize(byte_level, encode(byte_level, "Say"), output_ids)
    assert detok.uses_decode_stream
    assert "".join(pieces) == " Hello world"
    assert pieces[len(hello_ids) : len(hello_ids) + len(specials)] == ["", "", ""]  # nothing for the specials


def test_truncated_character_is_flushed_as_decode_gives_it(fast_tokenizer):
    output_ids = encode(fast_tokenizer, "Hello 日")[:-1]  # the last byte of 日 never comes
    pieces, detok = detokenize(fast_tokenizer, encode(fast_tokenizer, "Say"), output_ids)
    assert detok.uses_decode_stream
    assert pieces[-1].startswith("\ufffd")  # held back until finish()
    assert "".join(pieces) == reference_text(fast_tokenizer, encode(fast_tokenizer, "Say"), output_ids)
    assert pieces == detokenize(WindowOnly(fast_tokenizer), encode(fast_tokenizer, "Say"), output_ids)[0]


def test_prompt_context_gives_the_first_token_its_leading_space(llama_like):
    """Llama's decoder strips the text's first space: the prompt context keeps " world" whole."""
    hello, world = encode(llama_like, "Hello world")
    assert llama_like.decode([world]) == "world"
    for tokenizer in (llama_like, WindowOnly(llama_like)):
        assert detokenize(tokenizer, [hello], [world])[0] == [" world", ""]
        assert detokenize(tokenizer, [], [world])[0] == ["world", ""]


def test_prompt_ending_inside_a_character_takes_the_window_path(byte_level):
    prompt_ids = encode(byte_level, "Say 日")[:-1]
    output_ids = encode(byte_level, " more")
    pieces, detok = detokenize(byte_level, prompt_ids, output_ids)
    assert not detok.uses_decode_stream  # the stream would emit the prompt's tail as output
    assert pieces == detokenize(WindowOnly(byte_level), prompt_ids, output_ids)[0]
    assert "".join(pieces) == " more"


def test_stream_that_rewrites_emitted_text_falls_back_to_the_window_path(llama_like):
    """Byte fallback decodes an invalid byte run as U+FFFD per byte, rewriting an emitted "é"."""
    output_ids = llama_like.convert_tokens_to_ids(["<0xC3>", "<0xA9>", "<0x80>", "▁cat"])
    prompt_ids = encode(llama_like, "Hello")
    detok = IncrementalDetokenizer(llama_like, prompt_ids)
    assert [detok.push(t) for t in output_ids[:2]] == ["", "é"]
    assert detok.uses_decode_stream
    pieces = [detok.push(t) for t in output_ids[2:]] + [detok.finish()]
    assert not detok.uses_decode_stream
    assert ["", "é"] + pieces == detokenize(WindowOnly(llama_like), prompt_ids, output_ids)[0]


@pytest.mark.parametrize(
    ("text", "stop", "expected", "stopped"),
    [
        (" hello world", ("world",), " hello ", True),
        (" hello world", ("xyz",), " hello world", False),
        (" hello world", ("o w", "ld"), " hell", True),
        (" the cat café", ("é",), " the cat caf", True),
        (" 日本語です", ("語",), " 日本", True),
        (" ends with wor", ("world",), " ends with wor", False),
        (" a😀b", ("😀",), " a", True),
    ],
)
def test_stop_strings_on_the_decode_stream_path(fast_tokenizer, text, stop, expected, stopped):
    prompt_ids = encode(fast_tokenizer, "Say")
    output_ids = encode(fast_tokenizer, "Say" + text)[len(prompt_ids) :]
    pieces, detok = detokenize(fast_tokenizer, prompt_ids, output_ids, stop)
    assert detok.uses_decode_stream
    assert "".join(pieces) == expected
    assert detok.stopped is stopped
    assert pieces == detokenize(WindowOnly(fast_tokenizer), prompt_ids, output_ids, stop)[0]


def test_stop_string_prefix_is_held_back_on_the_decode_stream_path(byte_level):
    prompt_ids = encode(byte_level, "Say")
    output_ids = encode(byte_level, "Say hello wor")[len(prompt_ids) :]
    pieces, _ = detokenize(byte_level, prompt_ids, output_ids, ("world",))
    assert "".join(pieces[:-1]) == " hello "  # "wor" could still become "world"
    assert pieces[-1] == "wor"


@pytest.mark.parametrize("seed", range(3))
def test_random_stop_strings_cut_at_their_first_occurrence(byte_level, seed):
    rng = random.Random(seed)
    words = ["the", "cat", "café", "日本語", "😀", "runs", "a", ",", "über"]
    prompt_ids = encode(byte_level, "Say")
    for _ in range(60):
        text = " " + " ".join(rng.choice(words) for _ in range(12))
        output_ids = encode(byte_level, "Say" + text)[len(prompt_ids) :]
        start = rng.randrange(len(text))
        stop = (text[start : start + rng.randint(1, 6)], "zzz")
        pieces, detok = detokenize(byte_level, prompt_ids, output_ids, stop)
        assert detok.stopped and "".join(pieces) == text[: text.find(stop[0])]
        assert pieces == detokenize(WindowOnly(byte_level), prompt_ids, output_ids, stop)[0]
