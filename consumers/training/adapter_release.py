"""A finished job's adapter in the adapter store, and the announcements that serve a version.

`install_trained` installs it as the next version of its id, kept (not current) until
`release_installed` records it released (a redelivered job finds its own installation instead of
adding a version); `publish_files` uploads it under the worker's `publish_uri` when there is one.
Each version carries its record (`record_version`: the announced uri, base, rank and the
evaluation), so `promote` and `rollback` (`lorastream promote` / `rollback`) announce any
installed version as a new revision, exactly as the worker would. Blocking file and network IO:
call in a thread.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from consumers.training.config import TrainWorkerConfig
from consumers.training.translation import now_ms
from gpu_engine.adapter_files import adapter_checksum
from gpu_engine.training.adapter_store import (
    InstalledAdapter,
    install_adapter,
    installed,
    installed_version,
    installed_versions,
    release_history,
    release_version,
    roll_back,
)
from gpu_engine.training.release_history import ReleaseHistory, read_evaluation, write_evaluation
from schemas import AdapterEvent, LorastreamError, TrainingRequest
from schemas.training import ReleaseDecision, ReleaseScores


class AdapterPublishError(LorastreamError):
    """The trained adapter could not be uploaded to the publish uri."""


class VersionRecord(msgspec.Struct, frozen=True):
    """What the store keeps beside a version: how to announce it, and its evaluation."""

    uri: str
    base_model: str | None = None
    rank: int | None = None
    release: ReleaseScores | None = None


def install_trained(
    config: TrainWorkerConfig, request: TrainingRequest, adapter_dir: str, checksum: str
) -> InstalledAdapter:
    """Install the job's files from `adapter_dir`, kept (not served); raises AdapterStoreError."""
    for previous in installed_versions(config.adapter_root, request.adapter_id):
        if (
            previous.job_id == request.job_id
            and previous.checksum == checksum
            and adapter_checksum(previous.path) == checksum
        ):
            return previous  # a redelivered job that had already installed its adapter
    current = installed(config.adapter_root, request.adapter_id)
    replaces_own = current is not None and current.job_id == request.job_id
    return install_adapter(
        adapter_dir,
        config.adapter_root,
        request.adapter_id,
        job_id=request.job_id,
        checksum=checksum,
        overwrite=request.overwrite or replaces_own,
        make_current=False,
    )


def served_version(adapter_root: str, adapter_id: str) -> InstalledAdapter | None:
    """The version the store serves now (the last released one, or an earlier installation)."""
    return installed(adapter_root, adapter_id)


def record_version(adapter: InstalledAdapter, record: VersionRecord) -> None:
    write_evaluation(Path(adapter.path), msgspec.to_builtins(record))


def read_record(adapter: InstalledAdapter) -> VersionRecord | None:
    """A version's record; None when it has none or it does not decode (a version installed by hand)."""
    body = read_evaluation(Path(adapter.path))
    try:
        return None if body is None else msgspec.convert(body, VersionRecord)
    except msgspec.ValidationError:
        return None


def release_installed(adapter_root: str, adapter_id: str, version: int) -> ReleaseHistory:
    """Record `version` released, unless it already is the one released last (a redelivery)."""
    history = release_history(adapter_root, adapter_id)
    if history.current == version:
        return history
    return release_version(adapter_root, adapter_id, version)


def announcement(adapter_id: str, adapter: InstalledAdapter, history: ReleaseHistory) -> AdapterEvent:
    """The AdapterEvent that serves `adapter` as revision `history.revision`."""
    record = read_record(adapter) or VersionRecord(uri=Path(adapter.path).as_uri())
    release = record.release
    if release is not None and release.decision is not ReleaseDecision.RELEASED:
        release = msgspec.structs.replace(release, decision=ReleaseDecision.RELEASED, reason="released by hand")
    return AdapterEvent(
        adapter_id=adapter_id,
        version=adapter.version,
        uri=record.uri,
        checksum=adapter.checksum,
        base_model=record.base_model,
        rank=record.rank,
        revision=history.revision,
        release=release,
        ts_ms=now_ms(),
    )


def promote(adapter_root: str, adapter_id: str, version: int) -> AdapterEvent:
    """Release an installed (kept) version by hand; the announcement to send. Raises AdapterStoreError."""
    adapter = installed_version(adapter_root, adapter_id, version)
    return announcement(adapter_id, adapter, release_version(adapter_root, adapter_id, version))


def rollback(adapter_root: str, adapter_id: str) -> AdapterEvent:
    """Serve the previously released version again; the announcement to send. Raises AdapterStoreError."""
    history = roll_back(adapter_root, adapter_id)
    return announcement(adapter_id, installed_version(adapter_root, adapter_id, history.current), history)


def publish_files(config: TrainWorkerConfig, adapter_id: str, adapter: InstalledAdapter) -> str:
    """The uri to announce: the local directory, or its upload under `publish_uri` (one key per version)."""
    if config.publish_uri is None:
        return Path(adapter.path).as_uri()
    from gpu_engine.errors import EngineError
    from gpu_engine.store import S3Fetcher
    from gpu_engine.uris import parse_s3_uri

    try:
        location = parse_s3_uri(config.publish_uri).child(adapter_id).child(f"v{adapter.version}")
        S3Fetcher(endpoint_url=config.s3_endpoint_url).upload(Path(adapter.path), location)
    except EngineError as exc:
        raise AdapterPublishError(str(exc)) from exc
    return str(location)
