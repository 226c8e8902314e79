"""AdapterBounds: where adapter files may come from and how large they may be. No torch.

An adapter's location is its ref's uri, or `<adapter_root>/<adapter_id>`. A uri must fall under
the adapter root or one of `adapter_uri_roots`: a `file://` uri under one of the local
directories, an `s3://` uri under one of the bucket prefixes. Anything else is refused
(ADAPTER_PATH_REFUSED) before anything is read — at registration too, so a registry event cannot
point an id at an arbitrary directory of the host or bucket of the endpoint. When a local
directory is read, it and each of its files must still resolve under a local root (a symlink out
of the root is refused) and be regular files within the byte caps (ADAPTER_TOO_LARGE), checked
before a byte is read; S3 objects are checked against the same caps before their download.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from gpu_engine.adapter_ref import AdapterRef
from gpu_engine.adapters import CONFIG_FILE, check_adapter_id
from gpu_engine.config import EngineConfig
from gpu_engine.errors import AdapterNotFoundError, AdapterPathRefusedError, AdapterTooLargeError
from gpu_engine.uris import S3Location, is_s3_uri, parse_file_uri, parse_s3_uri
from gpu_engine.adapter_files import ADAPTER_FILES, current_version_dir


def _under(location: S3Location, root: S3Location) -> bool:
    return location.bucket == root.bucket and (
        not root.prefix or location.prefix == root.prefix or location.prefix.startswith(root.prefix + "/")
    )


@dataclass(frozen=True)
class AdapterBounds:
    """`root`: where ids without a uri are looked up (None: nowhere). `local_roots`/`s3_roots`: where
    uris may point (the root is one of them); local roots are absolute, each both as configured and
    with symlinks resolved. Symlinks inside an adapter's directory are resolved when it is read."""

    root: Path | S3Location | None
    local_roots: tuple[Path, ...]
    s3_roots: tuple[S3Location, ...]
    max_config_bytes: int
    max_weights_bytes: int

    @classmethod
    def from_config(cls, config: EngineConfig) -> AdapterBounds:
        roots = [] if config.adapter_root is None else [config.adapter_root]
        local: dict[Path, None] = {}  # ordered, without repeats
        remote = []
        for uri in [*roots, *config.adapter_uri_roots]:
            if is_s3_uri(uri):
                remote.append(parse_s3_uri(uri))
            else:  # as written and as resolved: uris may name either
                local.update(dict.fromkeys((Path(os.path.abspath(uri)), Path(os.path.realpath(uri)))))
        root = None if not roots else remote[0] if is_s3_uri(roots[0]) else Path(os.path.abspath(roots[0]))
        return cls(root, tuple(local), tuple(remote), config.max_adapter_config_bytes, config.max_adapter_weights_bytes)

    def max_file_bytes(self, name: str) -> int:
        return self.max_config_bytes if name == CONFIG_FILE else self.max_weights_bytes

    def locate(self, ref: AdapterRef) -> Path | S3Location:
        """Where the ref's files are: its uri, else `<root>/<adapter_id>`. No IO.

        Raises AdapterPathRefusedError for a uri outside the roots, AdapterNotFoundError for a
        malformed uri or id, or no root.
        """
        if ref.uri:
            if is_s3_uri(ref.uri):
                location = parse_s3_uri(ref.uri)
                if not any(_under(location, root) for root in self.s3_roots):
                    raise AdapterPathRefusedError(
                        f"adapter {ref.adapter_id!r}: {ref.uri} is outside the adapter buckets"
                    )
                return location
            path = parse_file_uri(ref.uri)
            if not any(path.is_relative_to(root) for root in self.local_roots):
                raise AdapterPathRefusedError(f"adapter {ref.adapter_id!r}: {ref.uri} is outside the adapter roots")
            return path
        check_adapter_id(ref.adapter_id)
        if self.root is None:
            raise AdapterNotFoundError(f"adapter {ref.adapter_id!r}: no adapter root is configured")
        return self.root.child(ref.adapter_id) if isinstance(self.root, S3Location) else self.root / ref.adapter_id

    def local_dir(self, path: Path, ref: AdapterRef) -> Path:
        """The directory to read at a located `path` (its current version), with its files checked.

        Resolves symlinks; the directory and every adapter file present must stay under a local
        root, be regular files, and be within the byte caps. A missing file is the reader's
        concern (AdapterMissingFileError). Raises AdapterNotFoundError when there is no adapter.
        """
        try:
            real = current_version_dir(path.resolve(strict=True))
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
            raise AdapterNotFoundError(f"adapter {ref.adapter_id!r} not found") from exc
        roots = [root.resolve() for root in self.local_roots]
        if not any(real.is_relative_to(root) for root in roots):
            raise AdapterPathRefusedError(
                f"adapter {ref.adapter_id!r}: its directory resolves outside the adapter roots"
            )
        if not real.is_dir() or (not ref.uri and not (real / CONFIG_FILE).exists()):
            raise AdapterNotFoundError(f"adapter {ref.adapter_id!r} not found")
        for name in ADAPTER_FILES:
            self._check_file(real / name, roots, ref)
        return real

    def _check_file(self, path: Path, roots: list[Path], ref: AdapterRef) -> None:
        try:
            real = path.resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
            raise AdapterPathRefusedError(f"adapter {ref.adapter_id!r}: {path.name} is a looping link") from exc
        if not any(real.is_relative_to(root) for root in roots):
            raise AdapterPathRefusedError(f"adapter {ref.adapter_id!r}: {path.name} links outside the adapter roots")
        try:
            info = real.stat()
        except FileNotFoundError:
            return  # missing: the reader names it (AdapterMissingFileError)
        except OSError as exc:
            raise AdapterNotFoundError(f"adapter {ref.adapter_id!r}: cannot read {path.name}: {exc}") from exc
        if not stat.S_ISREG(info.st_mode):
            raise AdapterPathRefusedError(f"adapter {ref.adapter_id!r}: {path.name} is not a regular file")
        cap = self.max_file_bytes(path.name)
        if info.st_size > cap:
            raise AdapterTooLargeError(
                f"adapter {ref.adapter_id!r}: {path.name} has {info.st_size} bytes; the cap is {cap}"
            )
