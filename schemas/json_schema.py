"""JSON Schema files of the wire contracts, generated from the msgspec types.

One self-contained schema (draft 2020-12) per contract, so a producer or consumer in any language
can validate a record before sending it or after reading it. `msgspec.json.schema` writes every
bound the types carry (`schemas/limits.py`); the rules the decoder enforces outside the types are
added here:

- patterns end in `\\Z` in Python (where `$` also matches before a trailing newline); JSON Schema
  patterns are ECMA-262, where `\\Z` does not exist and `$` (no multiline flag) is the end of the
  string, so every pattern's final `\\Z` is written as `$`;
- `schema_version` is at most SCHEMA_VERSION: a newer one is refused as `unsupported_version`;
- every number is a finite double (msgspec refuses NaN, infinities and `1e999`), so a float field
  without bounds of its own gets the range of finite doubles;
- a request's prompt is at most MAX_PROMPT_BYTES in UTF-8 as well as in characters, and so are its
  messages' contents together (`InferenceRequest.__post_init__`): JSON Schema cannot count bytes,
  so the descriptions say so;
- a request has exactly one of a non-empty prompt and non-empty messages (a `oneOf`).

Regenerate the committed files after changing an event: `python -m schemas.json_schema --out
schemas/json` (`--check` compares instead of writing; tests/schemas/test_json_schema.py does too).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from schemas.adapters import AdapterEvent
from schemas.deadletter import DeadLetter
from schemas.inference import CancelRequest, InferenceRequest, ReplyWire
from schemas.limits import MAX_PROMPT_BYTES, SCHEMA_VERSION
from schemas.training import CancelJob, TrainingEvent, TrainingRequest

DRAFT = "https://json-schema.org/draft/2020-12/schema"
MAX_FINITE = sys.float_info.max
DEFAULT_OUT_DIR = Path(__file__).resolve().parent / "json"
REGENERATE = "python -m schemas.json_schema --out schemas/json"


@dataclass(frozen=True)
class Contract:
    """One kind of record: what a topic's values are."""

    name: str  # the file is `<name>.schema.json`
    kind: Any  # a Struct type or a union of them
    topics: str  # which topics carry it (with the default prefix)

    @property
    def filename(self) -> str:
        return f"{self.name}.schema.json"


CONTRACTS = (
    Contract("inference-request", InferenceRequest, "lorastream.requests"),
    Contract(
        "reply-records",
        ReplyWire,
        "the requester's reply topic (lorastream.replies.*); Final and Error copies on lorastream.results",
    ),
    Contract("control", CancelRequest | CancelJob, "lorastream.control"),
    Contract("training-request", TrainingRequest, "lorastream.training.requests"),
    Contract("training-event", TrainingEvent, "lorastream.training.events"),
    Contract("adapter-event", AdapterEvent, "lorastream.adapters"),
    Contract("dead-letter", DeadLetter, "lorastream.requests.dlq"),
)


def build_schema(contract: Contract) -> dict[str, Any]:
    """The JSON Schema of one contract, with the decoder's extra rules written in."""
    generated = msgspec.json.schema(contract.kind)
    _rewrite(generated)
    schema: dict[str, Any] = {
        "$schema": DRAFT,
        "title": f"lorastream {contract.name} (schema_version {SCHEMA_VERSION})",
        "description": (
            f"Values on {contract.topics}: UTF-8 JSON objects tagged by `kind`. Unknown fields are "
            f"ignored. Generated from the msgspec types by `{REGENERATE}`; do not edit."
        ),
    }
    schema.update(generated)
    return schema


# exactly one of a non-empty prompt and non-empty messages (InferenceRequest.__post_init__)
_PROMPT_OR_MESSAGES = [
    {
        "required": ["prompt"],
        "properties": {"prompt": {"minLength": 1}, "messages": {"anyOf": [{"type": "null"}, {"maxItems": 0}]}},
    },
    {"required": ["messages"], "properties": {"messages": {"type": "array", "minItems": 1}, "prompt": {"maxLength": 0}}},
]


def _rewrite(node: Any) -> None:
    """Apply the decoder's extra rules to every (sub)schema of `node`, in place."""
    if isinstance(node, list):
        for item in node:
            _rewrite(item)
        return
    if not isinstance(node, dict):
        return
    pattern = node.get("pattern")
    if isinstance(pattern, str):
        node["pattern"] = _ecma_pattern(pattern)
    if node.get("type") == "number":
        if "minimum" not in node and "exclusiveMinimum" not in node:
            node["minimum"] = -MAX_FINITE
        if "maximum" not in node and "exclusiveMaximum" not in node:
            node["maximum"] = MAX_FINITE
    properties = node.get("properties")
    if isinstance(properties, dict):
        version = properties.get("schema_version")
        if isinstance(version, dict):
            version["maximum"] = SCHEMA_VERSION
        if node.get("title") == InferenceRequest.__name__:
            properties["prompt"]["description"] = (
                f"At most {MAX_PROMPT_BYTES} characters and at most {MAX_PROMPT_BYTES} bytes in UTF-8."
            )
            properties["messages"]["description"] = (
                f"Instead of a prompt; their contents together at most {MAX_PROMPT_BYTES} bytes in UTF-8."
            )
            node["oneOf"] = _PROMPT_OR_MESSAGES
    for value in node.values():
        _rewrite(value)


def _ecma_pattern(pattern: str) -> str:
    if not pattern.endswith(r"\Z") or r"\Z" in pattern[:-2]:
        raise ValueError(f"pattern {pattern!r} must end in \\Z and use it nowhere else")
    return pattern[:-2] + "$"


def render(contract: Contract) -> str:
    """The file text of one contract's schema (stable: same types, same bytes)."""
    return json.dumps(build_schema(contract), indent=2, ensure_ascii=False) + "\n"


def write_all(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for contract in CONTRACTS:
        path = out_dir / contract.filename
        path.write_text(render(contract), encoding="utf-8")
        paths.append(path)
    return paths


def stale_files(out_dir: Path) -> list[str]:
    """Names of the schema files under `out_dir` that are missing or differ from a fresh render."""
    stale = []
    for contract in CONTRACTS:
        path = out_dir / contract.filename
        if not path.is_file() or path.read_text(encoding="utf-8") != render(contract):
            stale.append(contract.filename)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m schemas.json_schema",
        description="Write (or check) the JSON Schema file of every lorastream wire contract.",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR, help="directory of the *.schema.json files")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when a file is stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.out)
        for name in stale:
            print(f"{args.out / name} is stale: run `{REGENERATE}`", file=sys.stderr)
        return 1 if stale else 0
    for path in write_all(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
