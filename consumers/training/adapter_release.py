"""A finished job's adapter, made servable: installed as the next version of its id in the adapter
root (a redelivered job finds its own installation instead of adding a version) and, when the
worker has a `publish_uri`, uploaded under it. Blocking file and network IO: call in a thread.
"""

from __future__ import annotations

from pathlib import Path

from consumers.training.config import TrainWorkerConfig
from gpu_engine.adapter_files import adapter_checksum
from gpu_engine.training.adapter_store import InstalledAdapter, install_adapter, installed
from schemas import LorastreamError, TrainingRequest


class AdapterPublishError(LorastreamError):
    """The trained adapter could not be uploaded to the publish uri."""


def install_trained(
    config: TrainWorkerConfig, request: TrainingRequest, adapter_dir: str, checksum: str
) -> InstalledAdapter:
    """Install the job's files from `adapter_dir`; raises AdapterStoreError (id taken, files wrong)."""
    previous = installed(config.adapter_root, request.adapter_id)
    if (
        previous is not None
        and previous.job_id == request.job_id
        and previous.checksum == checksum
        and adapter_checksum(previous.path) == checksum
    ):
        return previous  # a redelivered job that had already installed its adapter
    replaces_own = previous is not None and previous.job_id == request.job_id
    return install_adapter(
        adapter_dir,
        config.adapter_root,
        request.adapter_id,
        job_id=request.job_id,
        checksum=checksum,
        overwrite=request.overwrite or replaces_own,
    )


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
