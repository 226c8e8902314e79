"""Every engine refusal reaches the wire as its own code, mapped in one place (consumers/inference/translate.py)."""

from __future__ import annotations

import pytest

from consumers.inference.translate import wire_code
from gpu_engine import errors as engine
from lorastream import LorastreamError
from schemas import ErrorCode


def _engine_errors() -> list[type[engine.EngineError]]:
    found, todo = [], [engine.EngineError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


# raised on purpose but not the request's doing: they end as `internal`
_INTERNAL = {engine.EngineError, engine.UnsupportedModelError}


def test_every_engine_error_has_one_distinct_code_string():
    classes = [cls for cls in _engine_errors() if cls not in _INTERNAL]
    codes = [cls.code for cls in classes]
    assert all(isinstance(code, str) and code for code in codes)
    assert len(set(codes)) == len(codes), codes


@pytest.mark.parametrize("cls", sorted(set(_engine_errors()) - _INTERNAL, key=lambda cls: cls.__name__))
def test_every_engine_refusal_maps_to_a_wire_code_other_than_internal(cls):
    code, _ = wire_code(cls.code)
    assert code is not ErrorCode.INTERNAL


@pytest.mark.parametrize(
    ("cls", "wire", "dead_letter"),
    [
        (engine.AdapterNotFoundError, ErrorCode.ADAPTER_NOT_FOUND, True),
        (engine.AdapterPathRefusedError, ErrorCode.ADAPTER_PATH_REFUSED, True),
        (engine.AdapterPatternUnsafeError, ErrorCode.ADAPTER_PATTERN_UNSAFE, True),
        (engine.RequestInvalidError, ErrorCode.INVALID_REQUEST, True),
        (engine.PromptTooLongError, ErrorCode.PROMPT_TOO_LONG, True),
        (engine.AdapterUnavailableError, ErrorCode.ADAPTER_UNAVAILABLE, False),  # retriable: not the request's fault
        (engine.EngineError, ErrorCode.INTERNAL, False),
    ],
)
def test_wire_code_and_dead_letter(cls, wire, dead_letter):
    assert wire_code(cls.code) == (wire, dead_letter)


@pytest.mark.parametrize("code", [None, "", "no_such_code"])
def test_unknown_or_absent_engine_codes_are_internal(code):
    assert wire_code(code) == (ErrorCode.INTERNAL, False)


def test_one_exception_base_for_every_package():
    import gpu_engine.training.errors as training
    import streamer

    for cls in (engine.EngineError, training.TrainingError, streamer.RequestFailed, streamer.PublishFailed):
        assert issubclass(cls, LorastreamError), cls
    from schemas import InvalidEvent

    assert issubclass(InvalidEvent, LorastreamError)
