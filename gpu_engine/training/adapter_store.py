"""Installing a trained adapter into the adapter root: each version in its own directory, switched atomically.

Layout (gpu_engine.adapter_files): `<root>/<adapter_id>/.lorastream/v<N>/` holds version N
(the two files and a marker, `lorastream_training.json`: job_id, version, checksum, so that a
redelivered job recognises its own output and the next version numbers itself); the symlink
`.lorastream/current` names the version served, and is replaced with one rename. The files are
copied into a staging directory beside the versions, checked against their checksum, then
renamed into place, so a reader never sees a half-written version. Installing touches nothing but
`<root>/<adapter_id>/.lorastream/` and the id's own two file links: the ids nested below it survive.
The newest KEEP_VERSIONS versions are kept; older ones are pruned. No torch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from gpu_engine.adapter_files import (
    ADAPTER_FILES,
    CURRENT_LINK,
    VERSIONS_DIR,
    adapter_checksum,
    current_version_dir,
    is_reserved_segment,
)
from gpu_engine.training.errors import TrainErrorCode, TrainingError

MARKER_FILE = "lorastream_training.json"
KEEP_VERSIONS = 2  # the current version and the one before it (a loader may still be reading it)
_VERSION_DIR = re.compile(r"^v(\d{1,10})$")


class AdapterStoreError(TrainingError):
    """The adapter could not be installed: the id is taken, or the files do not match the checksum."""

    code = TrainErrorCode.INVALID_SPEC


@dataclass(frozen=True)
class InstalledAdapter:
    job_id: str
    version: int
    checksum: str
    path: str  # the version's own directory: its files never change


def adapter_path(adapter_root: str | Path, adapter_id: str) -> Path:
    """`<root>/<adapter_id>`; refuses ids that would leave the root or name a version store."""
    root = Path(adapter_root).resolve()
    path = (root / adapter_id).resolve()
    parts = [*adapter_id.split("/"), *(path.relative_to(root).parts if root in path.parents else ())]
    if root not in path.parents or any(is_reserved_segment(part) for part in parts):
        raise AdapterStoreError(f"adapter id {adapter_id!r} does not name a directory inside the adapter root")
    return path


def installed(adapter_root: str | Path, adapter_id: str) -> InstalledAdapter | None:
    """What a training job installed at this id (None: nothing, or an adapter put there by hand)."""
    path = current_version_dir(adapter_path(adapter_root, adapter_id))
    try:
        body = json.loads((path / MARKER_FILE).read_text())
        return InstalledAdapter(**body, path=str(path))
    except (OSError, json.JSONDecodeError, TypeError):
        return None


def is_taken(adapter_root: str | Path, adapter_id: str) -> bool:
    """An adapter (installed or placed by hand) is at this id; directories of nested ids do not count."""
    path = current_version_dir(adapter_path(adapter_root, adapter_id))
    return any((path / name).exists() for name in ADAPTER_FILES)


def install_adapter(
    source_dir: str | Path, adapter_root: str | Path, adapter_id: str, *, job_id: str, checksum: str, overwrite: bool
) -> InstalledAdapter:
    """Install the adapter files of `source_dir` as the next version of `adapter_id`; return it."""
    target = adapter_path(adapter_root, adapter_id)
    previous = installed(adapter_root, adapter_id)
    if is_taken(adapter_root, adapter_id) and not overwrite:
        raise AdapterStoreError(f"adapter {adapter_id!r} already exists; set overwrite to replace it")
    versions = target / VERSIONS_DIR
    staging = versions / f".tmp-{uuid.uuid4().hex}"
    try:
        staging.mkdir(parents=True)
        for name in ADAPTER_FILES:
            shutil.copyfile(Path(source_dir) / name, staging / name)
        if adapter_checksum(staging) != checksum:
            raise AdapterStoreError(f"adapter files in {source_dir} do not match checksum {checksum}")
        version = max([previous.version if previous else 0, *_version_numbers(versions)]) + 1
        result = InstalledAdapter(job_id, version, checksum, str(versions / f"v{version}"))
        marker = {k: v for k, v in asdict(result).items() if k != "path"}
        (staging / MARKER_FILE).write_text(json.dumps(marker))
        os.rename(staging, result.path)
        _replace_with_link(versions / CURRENT_LINK, f"v{version}", versions)
        for name in ADAPTER_FILES:
            _replace_with_link(target / name, f"{VERSIONS_DIR}/{CURRENT_LINK}/{name}", versions)
        (target / MARKER_FILE).unlink(missing_ok=True)  # an installation of the single-directory layout
        _prune(versions, keep=KEEP_VERSIONS)
    except OSError as exc:
        raise AdapterStoreError(f"cannot install adapter {adapter_id!r}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def _version_numbers(versions: Path) -> list[int]:
    if not versions.is_dir():
        return []
    return [int(m[1]) for p in versions.iterdir() if (m := _VERSION_DIR.match(p.name))]


def _replace_with_link(path: Path, target: str, tmp_dir: Path) -> None:
    """Make `path` a symlink to the relative `target`, in one rename (readers see the old or the new)."""
    if path.is_symlink() and os.readlink(path) == target:
        return
    tmp = tmp_dir / f".tmp-link-{uuid.uuid4().hex}"
    os.symlink(target, tmp)
    try:
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def _prune(versions: Path, keep: int) -> None:
    """Delete all but the newest `keep` version directories of this one id."""
    for number in sorted(_version_numbers(versions))[:-keep]:
        shutil.rmtree(versions / f"v{number}", ignore_errors=True)
