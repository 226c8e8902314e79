"""The one place where engine outcomes become wire error codes, and which of them are dead-lettered.

An engine refusal that means the request itself was bad (an adapter that cannot be served, a
prompt too long) is answered and dead-lettered; one that is not the request's fault (a store
that cannot be reached) is answered only. Anything unexpected is `internal`.
"""

from __future__ import annotations

from gpu_engine.types import EngineErrorCode
from schemas import ErrorCode

# engine refusals that mean the request itself was bad: answered and dead-lettered
_BAD_INPUT: dict[EngineErrorCode, ErrorCode] = {
    EngineErrorCode.ADAPTER_NOT_FOUND: ErrorCode.ADAPTER_NOT_FOUND,
    EngineErrorCode.ADAPTER_INVALID: ErrorCode.ADAPTER_INVALID,
    EngineErrorCode.ADAPTER_CORRUPT: ErrorCode.ADAPTER_CORRUPT,
    EngineErrorCode.ADAPTER_MISSING_FILE: ErrorCode.ADAPTER_MISSING_FILE,
    EngineErrorCode.ADAPTER_BASE_MISMATCH: ErrorCode.ADAPTER_BASE_MISMATCH,
    EngineErrorCode.ADAPTER_RANK_TOO_LARGE: ErrorCode.ADAPTER_RANK_TOO_LARGE,
    EngineErrorCode.ADAPTER_UNSUPPORTED: ErrorCode.ADAPTER_UNSUPPORTED,
    EngineErrorCode.ADAPTER_CHECKSUM_MISMATCH: ErrorCode.ADAPTER_CHECKSUM_MISMATCH,
    EngineErrorCode.ADAPTER_TOO_LARGE: ErrorCode.ADAPTER_TOO_LARGE,
    EngineErrorCode.ADAPTER_PATH_REFUSED: ErrorCode.ADAPTER_PATH_REFUSED,
    EngineErrorCode.ADAPTER_PATTERN_UNSAFE: ErrorCode.ADAPTER_PATTERN_UNSAFE,
    EngineErrorCode.PROMPT_TOO_LONG: ErrorCode.PROMPT_TOO_LONG,
    EngineErrorCode.INVALID_PARAMS: ErrorCode.INVALID_REQUEST,
}
# engine failures that are not the request's fault: answered, not dead-lettered (adapter_unavailable
# also answers a request refused because too many adapter loads were pending)
_NOT_BAD_INPUT: dict[EngineErrorCode, ErrorCode] = {
    EngineErrorCode.ADAPTER_UNAVAILABLE: ErrorCode.ADAPTER_UNAVAILABLE,
}


def wire_code(engine_code: EngineErrorCode | None) -> tuple[ErrorCode, bool]:
    """(the wire code, whether the request is dead-lettered) for an engine error."""
    if engine_code in _BAD_INPUT:
        return _BAD_INPUT[engine_code], True
    return _NOT_BAD_INPUT.get(engine_code, ErrorCode.INTERNAL), False
