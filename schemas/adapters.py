"""Adapter-registry events, published on the compacted adapters topic keyed by adapter_id."""

from __future__ import annotations

from typing import Annotated

import msgspec

from schemas.limits import (
    MAX_ADAPTER_RANK,
    MAX_ADAPTER_VERSION,
    SCHEMA_VERSION,
    AdapterId,
    BaseModelName,
    Checksum,
    EpochMs,
    SchemaVersion,
    Uri,
)
from schemas.training import ReleaseScores


class AdapterEvent(msgspec.Struct, frozen=True, tag="adapter", tag_field="kind"):
    """Version `version` of `adapter_id` lives at `uri` (sha256 `checksum`); deleted retires it.

    `revision` counts the id's announcements: a consumer applies an event whose revision is higher
    than the one it applied, whatever its version (a rollback: a new revision naming an older
    version), and refuses a lower one; at equal revisions the older version is refused.
    `release` carries the evaluation that released it (None: released without one).
    """

    adapter_id: AdapterId
    version: Annotated[int, msgspec.Meta(ge=0, le=MAX_ADAPTER_VERSION)]
    uri: Uri  # "": the adapter under the consumer's own root (and with `deleted`)
    checksum: Checksum = ""
    base_model: BaseModelName | None = None
    rank: Annotated[int, msgspec.Meta(ge=1, le=MAX_ADAPTER_RANK)] | None = None
    deleted: bool = False
    revision: Annotated[int, msgspec.Meta(ge=0, le=MAX_ADAPTER_VERSION)] = 0
    release: ReleaseScores | None = None
    ts_ms: EpochMs = 0
    schema_version: SchemaVersion = SCHEMA_VERSION
