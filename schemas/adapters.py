"""Adapter-registry events, published on the compacted adapters topic keyed by adapter_id."""

from __future__ import annotations

import msgspec

from schemas.limits import SCHEMA_VERSION, AdapterId


class AdapterEvent(msgspec.Struct, frozen=True, tag="adapter", tag_field="kind"):
    """Version `version` of `adapter_id` lives at `uri` (sha256 `checksum`); deleted retires it."""

    adapter_id: AdapterId
    version: int
    uri: str
    checksum: str = ""
    base_model: str | None = None
    rank: int | None = None
    deleted: bool = False
    ts_ms: int = 0
    schema_version: int = SCHEMA_VERSION
