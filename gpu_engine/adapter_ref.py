"""AdapterRef: which version of an adapter to serve and where its files live. Pure Python."""

from __future__ import annotations

from dataclasses import dataclass

MAX_ADAPTER_VERSION = 2**53  # the same bound as AdapterEvent.version at decode (schemas.limits)


@dataclass(frozen=True)
class AdapterRef:
    """One version of one adapter, as the registry announced it (or as found in the store).

    `uri` is `file:///abs/dir`, `s3://bucket/key/prefix`, or None: look `adapter_id` up in the
    configured store. `checksum` is gpu_engine.adapter_files.adapter_checksum's hex
    digest of the files; "" means not checked. Version 0 means "no registry entry".
    Raises ValueError for an empty id or a version outside [0, MAX_ADAPTER_VERSION].
    """

    adapter_id: str
    version: int = 0
    uri: str | None = None
    checksum: str = ""

    def __post_init__(self) -> None:
        if not self.adapter_id:
            raise ValueError("adapter_id must not be empty")
        if not 0 <= self.version <= MAX_ADAPTER_VERSION:
            raise ValueError(f"version must be in [0, {MAX_ADAPTER_VERSION}], got {self.version}")
