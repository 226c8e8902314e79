"""Installing a trained adapter into the adapter root (`<root>/<adapter_id>/`), atomically.

The files are copied into a staging directory on the same filesystem, checked against their
checksum, then renamed into place, so a server never sees a half-written adapter. Each installed
adapter carries a small marker (`lorastream_training.json`: job_id, version, checksum) so that a
redelivered job recognises its own output and a new version numbers itself. No torch.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from gpu_engine.training.adapter_files import ADAPTER_FILES, adapter_checksum
from gpu_engine.training.errors import TrainErrorCode, TrainingError

MARKER_FILE = "lorastream_training.json"
STAGING_DIR = ".lorastream-staging"


class AdapterStoreError(TrainingError):
    """The adapter could not be installed: the id is taken, or the files do not match the checksum."""

    code = TrainErrorCode.INVALID_SPEC


@dataclass(frozen=True)
class InstalledAdapter:
    job_id: str
    version: int
    checksum: str
    path: str


def adapter_path(adapter_root: str | Path, adapter_id: str) -> Path:
    """`<root>/<adapter_id>`; refuses ids that would leave the root."""
    root = Path(adapter_root).resolve()
    path = (root / adapter_id).resolve()
    if root not in path.parents or adapter_id.startswith(STAGING_DIR):
        raise AdapterStoreError(f"adapter id {adapter_id!r} does not name a directory inside the adapter root")
    return path


def installed(adapter_root: str | Path, adapter_id: str) -> InstalledAdapter | None:
    """What a training job installed at this id (None: nothing, or an adapter put there by hand)."""
    path = adapter_path(adapter_root, adapter_id)
    try:
        body = json.loads((path / MARKER_FILE).read_text())
        return InstalledAdapter(**body, path=str(path))
    except (OSError, json.JSONDecodeError, TypeError):
        return None


def is_taken(adapter_root: str | Path, adapter_id: str) -> bool:
    return adapter_path(adapter_root, adapter_id).exists()


def install_adapter(
    source_dir: str | Path, adapter_root: str | Path, adapter_id: str, *, job_id: str, checksum: str, overwrite: bool
) -> InstalledAdapter:
    """Copy the adapter files of `source_dir` to `<root>/<adapter_id>`; return what was installed."""
    target = adapter_path(adapter_root, adapter_id)
    previous = installed(adapter_root, adapter_id)
    if target.exists() and not overwrite:
        raise AdapterStoreError(f"adapter {adapter_id!r} already exists; set overwrite to replace it")
    staging_root = Path(adapter_root).resolve() / STAGING_DIR
    staging = staging_root / uuid.uuid4().hex
    staging.mkdir(parents=True)
    try:
        for name in ADAPTER_FILES:
            shutil.copyfile(Path(source_dir) / name, staging / name)
        if adapter_checksum(staging) != checksum:
            raise AdapterStoreError(f"adapter files in {source_dir} do not match checksum {checksum}")
        version = previous.version + 1 if previous is not None else 1
        result = InstalledAdapter(job_id, version, checksum, str(target))
        marker = {k: v for k, v in asdict(result).items() if k != "path"}
        (staging / MARKER_FILE).write_text(json.dumps(marker))
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            retired = staging_root / f"retired-{uuid.uuid4().hex}"
            os.rename(target, retired)
            os.rename(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(staging, target)
    except OSError as exc:
        raise AdapterStoreError(f"cannot install adapter {adapter_id!r}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result
