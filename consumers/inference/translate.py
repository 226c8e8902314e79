"""The one place where schema events and engine types meet, both ways.

In: an `InferenceRequest` becomes the engine's `GenerationRequest` (a request without a seed gets
one derived from its id, so a re-served attempt samples the same text). Out: each
`GenerationEvent` is applied to its `Answer` — tokens become chunks, the last event becomes a Final
(with its `Lineage`: base, adapter version, effective seed and params, engine version, consumer)
or an Error — and an engine error's code becomes a wire `ErrorCode`. An engine refusal that means
the request itself was bad (an adapter that cannot be served, a prompt too long) is answered and
dead-lettered; one that is not the request's fault (a store that cannot be reached) is answered
only. Anything unexpected is `internal`.
"""

from __future__ import annotations

import re

import msgspec

import lorastream
from consumers.inference.answer import Answer, derived_seed
from consumers.inference.answer_writer import AnswerWriter
from consumers.metrics import Metrics
from gpu_engine import errors as engine
from gpu_engine.types import ChatMessage as EngineChatMessage
from gpu_engine.types import FinishReason as EngineFinish
from gpu_engine.types import GenerationEvent, GenerationRequest, Provenance
from gpu_engine.types import SamplingParams as EngineSampling
from schemas import ErrorCode, FinishReason, InferenceRequest
from schemas.inference import Lineage
from schemas.limits import BASE_MODEL_PATTERN

# engine refusals that mean the request itself was bad: answered and dead-lettered
_BAD_INPUT: dict[str, ErrorCode] = {
    engine.AdapterNotFoundError.code: ErrorCode.ADAPTER_NOT_FOUND,
    engine.AdapterInvalidError.code: ErrorCode.ADAPTER_INVALID,
    engine.AdapterCorruptError.code: ErrorCode.ADAPTER_CORRUPT,
    engine.AdapterMissingFileError.code: ErrorCode.ADAPTER_MISSING_FILE,
    engine.AdapterBaseMismatchError.code: ErrorCode.ADAPTER_BASE_MISMATCH,
    engine.AdapterRankTooLargeError.code: ErrorCode.ADAPTER_RANK_TOO_LARGE,
    engine.AdapterUnsupportedError.code: ErrorCode.ADAPTER_UNSUPPORTED,
    engine.AdapterChecksumError.code: ErrorCode.ADAPTER_CHECKSUM_MISMATCH,
    engine.AdapterTooLargeError.code: ErrorCode.ADAPTER_TOO_LARGE,
    engine.AdapterPathRefusedError.code: ErrorCode.ADAPTER_PATH_REFUSED,
    engine.AdapterPatternUnsafeError.code: ErrorCode.ADAPTER_PATTERN_UNSAFE,
    engine.PromptTooLongError.code: ErrorCode.PROMPT_TOO_LONG,
    engine.ChatTemplateMissingError.code: ErrorCode.CHAT_TEMPLATE_MISSING,
    engine.RequestInvalidError.code: ErrorCode.INVALID_REQUEST,
}
# engine failures that are not the request's fault: answered, not dead-lettered (adapter_unavailable
# also answers a request refused because too many adapter loads were pending)
_NOT_BAD_INPUT: dict[str, ErrorCode] = {
    engine.AdapterUnavailableError.code: ErrorCode.ADAPTER_UNAVAILABLE,
    engine.DeviceBudgetError.code: ErrorCode.ADAPTER_UNAVAILABLE,  # may fit once pinned adapters are released
}


def wire_code(engine_code: str | None) -> tuple[ErrorCode, bool]:
    """(the wire code, whether the request is dead-lettered) for an engine error's code string."""
    if engine_code in _BAD_INPUT:
        return _BAD_INPUT[engine_code], True
    return _NOT_BAD_INPUT.get(engine_code, ErrorCode.INTERNAL), False


def effective_seed(request: InferenceRequest) -> int:
    """The seed the engine samples with: the request's, or the one derived from its id."""
    seed = request.params.seed
    return seed if seed is not None else derived_seed(request.request_id)


def lineage(request: InferenceRequest, served_by: str | None, provenance: Provenance | None) -> Lineage:
    """What produced the answer to `request`, for its Final (provenance None: the engine did not say)."""
    seed = effective_seed(request)
    lineage = Lineage(
        seed=seed,
        params=msgspec.structs.replace(request.params, seed=seed),
        engine_version=lorastream.__version__,
        served_by=served_by,
        adapter_id=request.adapter_id,
    )
    if provenance is None:
        return lineage
    base_name = provenance.base_name
    if base_name is not None and re.match(BASE_MODEL_PATTERN, base_name) is None:
        base_name = None  # e.g. a model directory named with spaces: not a name the wire accepts
    return msgspec.structs.replace(
        lineage,
        base_name=base_name,
        base_sha256=provenance.base_sha256,
        adapter_id=provenance.adapter_id,
        adapter_version=provenance.adapter_version,
        adapter_checksum=provenance.adapter_checksum,
    )


def generation_request(request: InferenceRequest) -> GenerationRequest:
    params = request.params
    sampling = EngineSampling(
        max_new_tokens=params.max_new_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k,
        stop=tuple(params.stop),
        seed=effective_seed(request),
        ignore_eos=params.ignore_eos,
    )
    deadline_s = request.deadline_ms / 1000.0 if request.deadline_ms is not None else None
    messages = None
    if request.messages:
        messages = tuple(EngineChatMessage(m.role, m.content) for m in request.messages)
    return GenerationRequest(request.request_id, request.prompt, request.adapter_id, sampling, deadline_s, messages)


def apply_event(answer: Answer, event: GenerationEvent, writer: AnswerWriter, metrics: Metrics) -> None:
    """One engine event for `answer`: new tokens to the writer; the last event ends the answer."""
    if answer.finished:
        return
    answer.prompt_tokens = event.prompt_tokens or answer.prompt_tokens
    if event.text or event.token_ids:
        answer.adapter_resolved = True  # tokens mean the adapter was found and loaded
        answer.add(event.text, event.token_ids)
        if answer.request.stream:
            writer.tokens_added(answer)
    if not event.is_final:
        return
    if event.adapter_tier is not None and event.finish_reason is not EngineFinish.ERROR:
        answer.adapter_resolved = True  # an error may name the tier it looked in: not a resolution
        metrics.adapter_tier.labels(writer.label(answer), event.adapter_tier).inc()
    if event.finish_reason is EngineFinish.ERROR:
        code, bad_input = wire_code(event.error_code)
        writer.error(answer, code, event.error_message, dead_letter=bad_input)
    elif event.finish_reason is EngineFinish.EXPIRED:
        writer.error(answer, ErrorCode.EXPIRED, "deadline passed while waiting; nothing was computed")
    elif answer.expired:
        writer.error(answer, ErrorCode.EXPIRED, "deadline passed during generation")
    else:
        answered_by = lineage(answer.request, answer.served_by, event.provenance)
        writer.final(answer, FinishReason(event.finish_reason.value), answered_by)
