"""Installing a trained adapter into the adapter root: each version in its own directory, switched atomically.

Layout (gpu_engine.adapter_files): `<root>/<adapter_id>/.lorastream/v<N>/` holds version N
(the two files and a marker, `lorastream_training.json`: job_id, version, checksum, so that a
redelivered job recognises its own output and the next version numbers itself); the symlink
`.lorastream/current` names the version served, and is replaced with one rename. The files are
copied into a staging directory beside the versions, checked against their checksum, then
renamed into place, so a reader never sees a half-written version. Installing touches nothing but
`<root>/<adapter_id>/.lorastream/` and the id's own two file links: the ids nested below it survive.
A version installed without `make_current` is kept: its files are there, `current` does not move.
Which versions were released, and in what order, is the release history (`release_history`):
`release_version` pushes one and points `current` at it, `roll_back` pops the top. The newest
KEEP_VERSIONS versions and the last KEEP_RELEASED released ones are kept; older ones are pruned. No torch.
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
from gpu_engine.training.release_history import (
    ReleaseHistory,
    locked,
    read_history,
    write_evaluation,
    write_history,
)

MARKER_FILE = "lorastream_training.json"
KEEP_VERSIONS = 2  # the newest installed (a loader may still be reading the one before the current)
KEEP_RELEASED = 2  # the served version and the one a rollback returns to
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
    source_dir: str | Path,
    adapter_root: str | Path,
    adapter_id: str,
    *,
    job_id: str,
    checksum: str,
    overwrite: bool,
    make_current: bool = True,
    evaluation: dict | None = None,
) -> InstalledAdapter:
    """Install the adapter files of `source_dir` as the next version of `adapter_id`; return it.

    `make_current` False keeps it: installed, `current` unchanged. `evaluation` is recorded with it.
    """
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
        if evaluation is not None:
            write_evaluation(staging, evaluation)
        os.rename(staging, result.path)
        if make_current:
            _point_current(target, version)
        _prune(versions, keep=KEEP_VERSIONS)
    except OSError as exc:
        raise AdapterStoreError(f"cannot install adapter {adapter_id!r}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def installed_versions(adapter_root: str | Path, adapter_id: str) -> list[InstalledAdapter]:
    """Every version a training job installed at this id (kept or released), oldest first."""
    versions = adapter_path(adapter_root, adapter_id) / VERSIONS_DIR
    found = []
    for number in sorted(_version_numbers(versions)):
        path = versions / f"v{number}"
        try:
            body = json.loads((path / MARKER_FILE).read_text())
            found.append(InstalledAdapter(**body, path=str(path)))
        except (OSError, json.JSONDecodeError, TypeError):
            continue
    return found


def installed_version(adapter_root: str | Path, adapter_id: str, version: int) -> InstalledAdapter:
    """One installed version; raises AdapterStoreError when it is not (or no longer) installed."""
    for adapter in installed_versions(adapter_root, adapter_id):
        if adapter.version == version:
            return adapter
    raise AdapterStoreError(f"adapter {adapter_id!r} has no installed version {version}")


def release_history(adapter_root: str | Path, adapter_id: str) -> ReleaseHistory:
    return read_history(adapter_path(adapter_root, adapter_id) / VERSIONS_DIR)


def release_version(adapter_root: str | Path, adapter_id: str, version: int) -> ReleaseHistory:
    """Record `version` (installed) as released and serve it from `current`; the new history.

    A history that is empty while an earlier installation is current starts with that one, so a
    rollback can return to it.
    """
    target = adapter_path(adapter_root, adapter_id)
    versions = target / VERSIONS_DIR
    installed_version(adapter_root, adapter_id, version)
    with locked(versions):
        history = read_history(versions)
        previous = installed(adapter_root, adapter_id)
        if not history.released and previous is not None and previous.version != version:
            history = ReleaseHistory(history.revision, (previous.version,))
        history = history.pushed(version)
        _point_current(target, version)
        write_history(versions, history)
    return history


def roll_back(adapter_root: str | Path, adapter_id: str) -> ReleaseHistory:
    """Serve the release before the current one again (a new revision); raises AdapterStoreError
    when none is recorded or its files were pruned."""
    target = adapter_path(adapter_root, adapter_id)
    versions = target / VERSIONS_DIR
    with locked(versions):
        try:
            history = read_history(versions).popped()
        except ValueError as exc:
            raise AdapterStoreError(f"adapter {adapter_id!r}: {exc}") from exc
        installed_version(adapter_root, adapter_id, history.current)
        _point_current(target, history.current)
        write_history(versions, history)
    return history


def _point_current(target: Path, version: int) -> None:
    """Serve `version` from the id's `current` link and file links (each switched in one rename)."""
    versions = target / VERSIONS_DIR
    _replace_with_link(versions / CURRENT_LINK, f"v{version}", versions)
    for name in ADAPTER_FILES:
        _replace_with_link(target / name, f"{VERSIONS_DIR}/{CURRENT_LINK}/{name}", versions)
    (target / MARKER_FILE).unlink(missing_ok=True)  # an installation of the single-directory layout


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
    """Delete all but the newest `keep` version directories of this one id, the current one and the
    last KEEP_RELEASED released ones."""
    current = os.readlink(versions / CURRENT_LINK) if (versions / CURRENT_LINK).is_symlink() else None
    protected = {f"v{n}" for n in read_history(versions).released[-KEEP_RELEASED:]} | {current}
    for number in sorted(_version_numbers(versions))[:-keep]:
        if f"v{number}" not in protected:
            shutil.rmtree(versions / f"v{number}", ignore_errors=True)
