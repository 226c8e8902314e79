"""PEFT's rank_pattern / alpha_pattern lookup, matched in linear time.

PEFT matches each key with `re.match(rf"(.*\\.)?({key})$", module_name)` and takes the first key
that matches. Python's backtracking engine can take exponential time on such a pattern (the key
`(?:(?:.|.)*)*#` takes seconds on a short name), so the pattern is parsed by Python's own parser
(its meaning is Python's, exactly) and re-emitted for RE2, whose running time is linear in the
name. A construct RE2 has no linear-time equivalent for (backreferences, lookarounds, atomic
groups, possessive repeats) or inline flags refuse the adapter: ADAPTER_PATTERN_UNSAFE.

The emitted pattern equals Python's on every ASCII module name (the only names the engine builds:
`model.layers.<i>.<block>.<projection>`): character classes like `\\d`, `\\w`, `\\s` differ between
the engines only outside ASCII.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from re import _constants as sre
from re import _parser as sre_parse

import re2

from gpu_engine.errors import AdapterInvalidError, AdapterPatternUnsafeError

MAX_PATTERN_KEYS = 1024  # keys per rank_pattern / alpha_pattern
MAX_PATTERN_CHARS = 256  # per key; PEFT keys are module names or short suffix patterns
_MAX_REPEAT = 1000  # RE2's largest counted repetition
_RE2_MAX_MEM_BYTES = 1 << 20  # per compiled key: program and DFA cache
_CATEGORIES = {
    sre.CATEGORY_DIGIT: r"\d", sre.CATEGORY_NOT_DIGIT: r"\D",
    sre.CATEGORY_SPACE: r"\s", sre.CATEGORY_NOT_SPACE: r"\S",
    sre.CATEGORY_WORD: r"\w", sre.CATEGORY_NOT_WORD: r"\W",
}
_ANCHORS = {
    sre.AT_BEGINNING: "^", sre.AT_BEGINNING_STRING: r"\A", sre.AT_END: "$", sre.AT_END_STRING: r"\z",
    sre.AT_BOUNDARY: r"\b", sre.AT_NON_BOUNDARY: r"\B",
}


class _Unsafe(Exception):
    """A construct with no linear-time RE2 equivalent; the message says which."""


class ModulePatterns:
    """One rank_pattern or alpha_pattern: `value(module_name, default)` is PEFT's lookup.

    Raises AdapterInvalidError for keys Python cannot parse or non-positive values, and
    AdapterPatternUnsafeError for keys that cannot be matched in linear time.
    """

    def __init__(self, patterns: object, name: str, value_type: type | tuple[type, ...], adapter_id: str) -> None:
        where = f"adapter {adapter_id!r}: {name}"
        if not isinstance(patterns, Mapping):
            raise AdapterInvalidError(f"{where} must be an object")
        if len(patterns) > MAX_PATTERN_KEYS:
            raise AdapterPatternUnsafeError(f"{where} has {len(patterns)} keys; at most {MAX_PATTERN_KEYS}")
        self._compiled = []
        for key, value in patterns.items():
            if not isinstance(value, value_type) or isinstance(value, bool) or value <= 0:
                raise AdapterInvalidError(f"{where}[{key!r}] must be a positive number")
            self._compiled.append((compile_module_pattern(key, where), value))

    def value(self, module_name: str, default):
        for pattern, value in self._compiled:
            if pattern.match(module_name):
                return value
        return default


def compile_module_pattern(key: str, where: str = "pattern"):
    """An RE2 regex matching exactly the module names PEFT's `re.match(rf"(.*\\.)?({key})$", name)` matches."""
    if len(key) > MAX_PATTERN_CHARS:
        raise AdapterPatternUnsafeError(f"{where} key of {len(key)} characters; at most {MAX_PATTERN_CHARS}")
    try:
        tree = sre_parse.parse(rf"(.*\.)?({key})$")
    except (re.error, OverflowError, RecursionError) as exc:
        raise AdapterInvalidError(f"{where} key {key!r} is not a pattern: {exc}") from exc
    try:
        translated = _emit(tree)
    except _Unsafe as exc:
        raise AdapterPatternUnsafeError(f"{where} key {key!r}: {exc}") from exc
    options = re2.Options()
    options.max_mem = _RE2_MAX_MEM_BYTES
    options.log_errors = False
    try:
        return re2.compile(translated, options)
    except re2.error as exc:
        raise AdapterPatternUnsafeError(f"{where} key {key!r} is too complex to match safely: {exc}") from exc


def _emit(items) -> str:
    return "".join(_emit_item(op, av) for op, av in items)


def _emit_item(op, av) -> str:
    if op is sre.LITERAL:
        return _char(av)
    if op is sre.NOT_LITERAL:
        return f"[^{_char(av)}]"
    if op is sre.ANY:
        return "."
    if op is sre.IN:
        return _emit_set(av)
    if op is sre.BRANCH:
        return "(?:" + "|".join(_emit(branch) for branch in av[1]) + ")"
    if op is sre.SUBPATTERN:
        _, add_flags, del_flags, body = av
        if add_flags or del_flags:
            raise _Unsafe("inline flags are not supported")
        return f"(?:{_emit(body)})"
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
        low, high, body = av
        if low > _MAX_REPEAT or (high is not sre.MAXREPEAT and high > _MAX_REPEAT):
            raise _Unsafe(f"a repetition count above {_MAX_REPEAT}")
        bounds = f"{{{low},}}" if high is sre.MAXREPEAT else f"{{{low},{high}}}"
        return f"(?:{_emit(body)}){bounds}" + ("?" if op is sre.MIN_REPEAT else "")
    if op is sre.AT and av in _ANCHORS:
        return _ANCHORS[av]
    if op in (sre.GROUPREF, sre.GROUPREF_EXISTS):
        raise _Unsafe("backreferences have no linear-time match")
    if op in (sre.ASSERT, sre.ASSERT_NOT):
        raise _Unsafe("lookarounds have no linear-time match")
    raise _Unsafe(f"{str(op).lower()} has no linear-time match")


def _emit_set(items) -> str:
    parts = []
    for op, av in items:
        if op is sre.NEGATE:
            parts.insert(0, "^")
        elif op is sre.LITERAL:
            parts.append(_char(av))
        elif op is sre.RANGE:
            parts.append(f"{_char(av[0])}-{_char(av[1])}")
        elif op is sre.CATEGORY and av in _CATEGORIES:
            parts.append(_CATEGORIES[av])
        else:
            raise _Unsafe(f"{str(op).lower()} inside a character set is not supported")
    return "[" + "".join(parts) + "]"


def _char(code: int) -> str:
    return f"\\x{{{code:x}}}"
