"""Building an answer's Lineage from the request and what the engine says served it."""

from __future__ import annotations

import lorastream
from cli.commands import tail_matches
from consumers.inference.answer import derived_seed
from consumers.inference.translate import generation_request, lineage
from gpu_engine.types import Provenance
from schemas import Error, ErrorCode, Final, FinishReason, InferenceRequest, SamplingParams, decode_reply, encode

SHA = "ab" * 32


def test_provenance_fills_base_and_adapter_and_the_seed_is_the_one_the_engine_got():
    request = InferenceRequest("r-9", "hi", adapter_id="acme/a", params=SamplingParams(max_new_tokens=3))
    got = lineage(request, "node-a", Provenance("tiny-base", SHA, "acme/a", 4, "cd" * 32))
    assert got.seed == got.params.seed == derived_seed("r-9") == generation_request(request).sampling.seed
    assert got.params.max_new_tokens == 3 and request.params.seed is None  # the request is untouched
    assert (got.base_name, got.base_sha256) == ("tiny-base", SHA)
    assert (got.adapter_id, got.adapter_version, got.adapter_checksum) == ("acme/a", 4, "cd" * 32)
    assert (got.engine_version, got.served_by) == (lorastream.__version__, "node-a")
    final = Final("r-9", 0, 0, FinishReason.EOS, "x", lineage=got)
    assert decode_reply(encode(final)).lineage == got  # what is written decodes within the bounds


def test_without_provenance_only_what_the_service_knows_and_a_bad_base_name_is_dropped():
    request = InferenceRequest("r-1", "hi", params=SamplingParams(seed=12))
    bare = lineage(request, None, None)
    assert (bare.seed, bare.base_name, bare.base_sha256, bare.adapter_version) == (12, None, "", None)
    spaced = lineage(request, None, Provenance("my model dir", SHA))
    assert spaced.base_name is None and spaced.base_sha256 == SHA
    decode_reply(encode(Final("r-1", 0, 0, FinishReason.EOS, "x", lineage=spaced)))


def test_tail_filters_select_by_lineage_and_skip_errors_and_finals_without_it():
    request = InferenceRequest("r-1", "hi", adapter_id="acme/a")
    v3 = Final("r-1", 0, 0, FinishReason.EOS, "x", adapter_id="acme/a",
               lineage=lineage(request, None, Provenance("b", SHA, "acme/a", 3, "")))
    bare = Final("r-2", 0, 0, FinishReason.EOS, "x", adapter_id="acme/a")
    error = Error("r-3", 0, 0, ErrorCode.INTERNAL, "boom")
    assert [tail_matches(r, None, None) for r in (v3, bare, error)] == [True, True, True]
    assert [tail_matches(r, "acme/a", None) for r in (v3, bare, error)] == [True, False, False]
    assert (tail_matches(v3, "acme/a", 3), tail_matches(v3, "acme/a", 2), tail_matches(v3, None, 3)) == (True, False, True)
    assert tail_matches(v3, "acme/b", 3) is False
