"""The committed JSON Schema files (schemas/json/) are what the msgspec types generate, accept what
the service sends and accepts, and refuse what its decoder refuses."""

from __future__ import annotations

import json
import math
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest

import schemas
from schemas.deadletter import MAX_REASON_CHARS, dead_letter
from schemas.json_schema import CONTRACTS, REGENERATE, main, render, stale_files
from schemas.limits import MAX_ANSWER_CHARS, MAX_PROMPT_BYTES
from tests.schemas import extreme_fields
from tests.schemas.extreme_fields import BODIES, TOKEN, VALID_EXTREMES

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "schemas" / "json"

CONTRACT_OF: dict[type, str] = {
    schemas.InferenceRequest: "inference-request",
    schemas.CancelRequest: "control",
    schemas.CancelJob: "control",
    schemas.TokenChunk: "reply-records",
    schemas.ChunkBatch: "reply-records",
    schemas.Final: "reply-records",
    schemas.Error: "reply-records",
    schemas.TrainingRequest: "training-request",
    schemas.TrainingEvent: "training-event",
    schemas.AdapterEvent: "adapter-event",
    schemas.DeadLetter: "dead-letter",
}


def _ecma_pattern(validator, pattern, instance, schema):
    """`pattern` with ECMA-262 semantics, as JSON Schema specifies: `$` is the end of the string
    (Python's `$` also matches before a final newline, which would let `"id\\n"` through)."""
    if not validator.is_type(instance, "string"):
        return
    python_pattern = pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern
    if re.search(python_pattern, instance) is None:
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


EcmaValidator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _ecma_pattern})


@cache
def validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((COMMITTED / f"{name}.schema.json").read_text(encoding="utf-8"))
    return EcmaValidator(schema)


def _refuse_constant(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range for a double")
    return value


def parse_json(data: bytes) -> Any:
    """Parse as a strict JSON reader does: no NaN/Infinity, no number past a double's range."""
    return json.loads(data, parse_constant=_refuse_constant, parse_float=_finite)


def errors(name: str, data: bytes) -> list[str]:
    """Why the schema `name` refuses `data` (empty: it accepts it); unparseable JSON is refused."""
    try:
        document = parse_json(data)
    except ValueError as exc:
        return [f"not JSON: {exc}"]
    return [e.message for e in validator(name).iter_errors(document)]


def test_every_contract_has_a_committed_file_equal_to_a_fresh_generation():
    stale = stale_files(COMMITTED)
    assert not stale, f"{stale} differ from the msgspec types: run `{REGENERATE}` and commit the result"
    names = sorted(p.name for p in COMMITTED.glob("*.schema.json"))
    assert names == sorted(c.filename for c in CONTRACTS), "a schema file without a contract (or the reverse)"


def test_the_entry_point_writes_and_checks(tmp_path, capsys):
    assert main(["--out", str(tmp_path)]) == 0
    assert main(["--out", str(tmp_path), "--check"]) == 0
    first = CONTRACTS[0]
    (tmp_path / first.filename).write_text("{}", encoding="utf-8")
    assert main(["--out", str(tmp_path), "--check"]) == 1
    assert REGENERATE in capsys.readouterr().err
    assert (tmp_path / CONTRACTS[1].filename).read_text(encoding="utf-8") == render(CONTRACTS[1])


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.name)
def test_each_file_is_a_valid_draft_2020_12_schema_with_portable_patterns(contract):
    schema = json.loads((COMMITTED / contract.filename).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    text = json.dumps(schema)
    assert r"\\Z" not in text, "\\Z is not ECMA-262: a JavaScript or Go validator would reject the schema"


@pytest.mark.parametrize("kind", list(BODIES), ids=lambda k: k.__name__)
def test_a_body_with_every_field_set_is_valid_and_decodes(kind):
    data = msgspec.json.encode(BODIES[kind])
    assert errors(CONTRACT_OF[kind], data) == []
    extreme_fields.DECODERS[kind](data)


def _events_the_service_encodes() -> list[msgspec.Struct]:
    chunk = schemas.TokenChunk("r-1", attempt=1001, seq=0, text="hé", token_ids=[0, 2**31 - 1], reply_token=TOKEN)
    return [
        schemas.InferenceRequest("r-1", "hello"),
        schemas.InferenceRequest("r-2", "é" * (MAX_PROMPT_BYTES // 2), adapter_id="acme/a.b_c-d"),
        chunk,
        schemas.ChunkBatch([chunk, chunk]),
        schemas.Final("r-1", 0, 1, schemas.FinishReason.STOP, "x" * MAX_ANSWER_CHARS),
        schemas.Error("r-1", 0, 0, schemas.ErrorCode.REPLY_TOPIC_REFUSED, "m" * 8192),
        schemas.CancelRequest("r-1"),
        schemas.CancelJob("j-1"),
        schemas.TrainingRequest("j-1", "acme/x", schemas.DatasetRef(task="sentiment")),
        schemas.TrainingEvent("j-1", schemas.JobState.QUEUED, ts_ms=0),
        schemas.AdapterEvent("acme/x", 0, ""),
        schemas.AdapterEvent("acme/x", 2**53, "s3://bucket/acme/x", deleted=True),
        dead_letter(
            source_topic="lorastream.requests", partition=0, offset=2**63 - 1, code=schemas.ErrorCode.MALFORMED,
            reason="r" * 100_000, original=b"\xff" * 3000, request_id=None, ts_ms=1, max_original_bytes=1024,
        ),
    ]


@pytest.mark.parametrize("event", _events_the_service_encodes(), ids=lambda e: type(e).__name__)
def test_events_the_service_encodes_are_valid(event):
    data = schemas.encode(event)
    assert errors(CONTRACT_OF[type(event)], data) == []
    assert schemas.decode(data, type(event)) == event


@pytest.mark.parametrize("label, overrides", VALID_EXTREMES, ids=[label for label, _ in VALID_EXTREMES])
def test_valid_extreme_requests_are_valid(label, overrides):
    data = msgspec.json.encode({**BODIES[schemas.InferenceRequest], **overrides})
    assert errors("inference-request", data) == []


@pytest.mark.parametrize("case", extreme_fields.all_cases(), ids=lambda c: c.id)
def test_what_the_decoder_refuses_the_schema_refuses(case):
    data = case.encode()
    with pytest.raises(schemas.InvalidEvent):
        extreme_fields.DECODERS[case.kind](data)
    assert errors(CONTRACT_OF[case.kind], data), f"the schema accepts {case.id}, which the service refuses"


@pytest.mark.parametrize(
    "name, body",
    [
        ("inference-request", {"kind": "request", "request_id": "r 1", "prompt": "x"}),  # space in the id
        ("inference-request", {"kind": "request", "request_id": "r", "prompt": "x", "schema_version": 2}),
        ("inference-request", {"kind": "request", "request_id": "r", "prompt": "x", "adapter_id": "../etc"}),
        ("inference-request", {"kind": "request", "request_id": "r", "prompt": "x", "reply_token": "short"}),
        ("inference-request", {"kind": "request", "request_id": "r"}),  # no prompt
        ("reply-records", {"kind": "chunks", "chunks": []}),
        ("reply-records", {"kind": "final", "request_id": "r", "attempt": 0, "seq": 0, "text": "", "finish_reason": "bored"}),
        ("control", {"kind": "request", "request_id": "r", "prompt": "x"}),  # not a control event
        ("dead-letter", {"kind": "dead_letter", "source_topic": "t", "partition": 0, "offset": -1,
                         "code": "malformed", "reason": "", "original": ""}),
        ("dead-letter", {"kind": "dead_letter", "source_topic": "t", "partition": 0, "offset": 0,
                         "code": "malformed", "reason": "r" * (MAX_REASON_CHARS + 1), "original": ""}),
    ],
)  # fmt: skip
def test_bad_records_are_refused_by_schema_and_decoder(name, body):
    data = msgspec.json.encode(body)
    assert errors(name, data), f"the schema accepts {body}"
    kind = {"inference-request": schemas.InferenceRequest, "reply-records": schemas.ReplyWire,
            "control": schemas.CancelRequest | schemas.CancelJob, "dead-letter": schemas.DeadLetter}[name]  # fmt: skip
    with pytest.raises(schemas.InvalidEvent):
        schemas.decode(data, kind)


def test_a_prompt_over_the_byte_limit_is_the_one_bound_the_schema_can_only_describe():
    # 40,000 two-byte characters: within maxLength (characters), over MAX_PROMPT_BYTES in UTF-8
    data = msgspec.json.encode({"kind": "request", "request_id": "r", "prompt": "é" * 40_000})
    assert errors("inference-request", data) == []
    with pytest.raises(schemas.InvalidEvent):
        schemas.decode_request(data)
    prompt = json.loads((COMMITTED / "inference-request.schema.json").read_text())["$defs"]["InferenceRequest"]
    assert f"{MAX_PROMPT_BYTES} bytes in UTF-8" in prompt["properties"]["prompt"]["description"]
