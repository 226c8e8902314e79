"""rank_pattern / alpha_pattern keys: matched by RE2 exactly as PEFT's `re.match(rf"(.*\\.)?({key})$", name)`
matches them, in linear time; keys with no linear-time match (or too long, or too many) are refused."""

from __future__ import annotations

import random
import re
import time

import pytest
import re2

from gpu_engine.adapter_patterns import (
    MAX_PATTERN_CHARS,
    MAX_PATTERN_KEYS,
    AdapterPatternUnsafeError,
    ModulePatterns,
    compile_module_pattern,
)
from gpu_engine.errors import AdapterInvalidError
from gpu_engine.model_spec import ATTENTION_PROJECTIONS, MLP_PROJECTIONS
from gpu_engine.adapter_patterns import AdapterPatternUnsafeError

NAMES = [
    f"model.layers.{layer}.{block}.{proj}"
    for layer in (0, 1, 7, 10, 31)
    for block, projs in (("self_attn", ATTENTION_PROJECTIONS), ("mlp", MLP_PROJECTIONS))
    for proj in projs
]
# keys PEFT users write, and syntax where the two engines would read the same text differently
SAFE_KEYS = [
    "q_proj", "v_proj", "model.layers.0.self_attn.q_proj", r"layers\.1\d?\..*", r"(?:q|v)_proj", "down_proj|gate_proj",
    r"\w+_proj", r"layers\.[0-3]\.mlp\.down_proj", r"[^q]_proj", r"\bq_proj", ".*?proj", r"\d{1,2}\.self_attn\.v_proj",
    r"\Aq", r"proj\Z", r"[\d.]+q_proj", r"(?P<name>q)_proj", "x)|(.*q_proj", r"layers\.1[0-9]*\.", "",
    r"l\x61yers", r"\.o_pro[^\W]",
]
# Python and RE2 read these texts differently: Python's reading is the one that counts
READ_DIFFERENTLY = [
    ".*_proj{,3}",  # Python: j{0,3}; RE2: the literal text "{,3}"
    ".*[[:alpha:]]",  # Python: a set of "[:alph" then "]"; RE2: a POSIX class
]


def python_matches(key: str) -> list[bool]:
    return [bool(re.match(rf"(.*\.)?({key})$", name)) for name in NAMES]


@pytest.mark.parametrize("key", SAFE_KEYS)
def test_keys_match_exactly_what_python_matches(key):
    matcher = compile_module_pattern(key)
    assert [bool(matcher.match(name)) for name in NAMES] == python_matches(key)


@pytest.mark.filterwarnings("ignore:Possible nested set:FutureWarning")
@pytest.mark.parametrize("key", READ_DIFFERENTLY)
def test_syntax_re2_reads_differently_keeps_pythons_meaning(key):
    raw = re2.compile(rf"(.*\.)?({key})$")
    assert [bool(raw.match(name)) for name in NAMES] != python_matches(key)  # why keys are re-emitted
    matcher = compile_module_pattern(key)
    assert [bool(matcher.match(name)) for name in NAMES] == python_matches(key)


def test_random_keys_match_exactly_what_python_matches():
    """Keys built from pieces without nested repeats, so Python answers quickly too."""
    pieces = ["q", "_proj", r"\.", ".", "layers", r"\d", "[0-9]", "[a-z]", "(?:v|k)", "self_attn", "mlp", "1", "0"]
    repeats = ["", "", "*", "+", "?", "{1,2}", "{,2}", "*?"]
    rng = random.Random(20)
    for _ in range(300):
        key = "".join(rng.choice(pieces) + rng.choice(repeats) for _ in range(rng.randint(1, 5)))
        if rng.random() < 0.3:
            key += "|" + rng.choice(pieces)
        matcher = compile_module_pattern(key)
        for name in NAMES:
            assert bool(matcher.match(name)) == bool(re.match(rf"(.*\.)?({key})$", name)), (key, name)


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (r"(q)\1_proj", "backreference"),
        (r"(q)?(?(1)_proj)", "backreference"),
        (r"(?=q)q_proj", "lookaround"),
        (r"(?<!x)q_proj", "lookaround"),
        (r"(?>q_)proj", "atomic_group"),
        (r"q*+_proj", "possessive_repeat"),
        (r"(?i:Q_PROJ)", "inline flags"),
        ("a{1001}", "repetition count"),
        ("(?:a{1000}){1000}", "too complex"),
        ("q" * (MAX_PATTERN_CHARS + 1), "characters"),
    ],
)
def test_keys_without_a_linear_time_match_are_refused(key, reason):
    with pytest.raises(AdapterPatternUnsafeError, match=reason) as info:
        compile_module_pattern(key)
    assert info.value.code == AdapterPatternUnsafeError.code


@pytest.mark.parametrize("key", ["(", "a**", "(?i)q_proj", "[z-a]"])
def test_keys_python_cannot_parse_are_invalid(key):
    with pytest.raises(AdapterInvalidError, match="is not a pattern") as info:
        compile_module_pattern(key)
    assert info.value.code == AdapterInvalidError.code


def test_the_catastrophic_key_costs_microseconds():
    matcher = compile_module_pattern("(?:(?:.|.)*)*#")  # seconds with Python's re on 13 characters
    started = time.perf_counter()
    assert not any(matcher.match(name * 4) for name in NAMES)
    assert time.perf_counter() - started < 0.5


def test_first_matching_key_wins_and_values_are_checked():
    patterns = ModulePatterns({"q_proj": 4, r"layers\.0\..*": 2}, "rank_pattern", int, "a")
    assert patterns.value("model.layers.0.self_attn.q_proj", 8) == 4
    assert patterns.value("model.layers.0.self_attn.v_proj", 8) == 2
    assert patterns.value("model.layers.1.self_attn.v_proj", 8) == 8
    for bad in ({"q": 0}, {"q": True}, {"q": "4"}, ["q"]):
        with pytest.raises(AdapterInvalidError):
            ModulePatterns(bad, "rank_pattern", int, "a")
    with pytest.raises(AdapterPatternUnsafeError, match="keys"):
        ModulePatterns({f"k{n}": 1 for n in range(MAX_PATTERN_KEYS + 1)}, "rank_pattern", int, "a")
