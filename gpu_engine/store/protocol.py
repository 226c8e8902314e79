"""AdapterStore: the one method every store offers."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Protocol

from gpu_engine.adapter_ref import AdapterRef


class AdapterStore(Protocol):
    def checkout(self, ref: AdapterRef) -> contextlib.AbstractContextManager[Path]:
        """A local directory holding the adapter's two files, unchanged until the block exits.

        Raises AdapterNotFoundError, AdapterPathRefusedError (outside the configured roots),
        AdapterTooLargeError, AdapterMissingFileError, AdapterChecksumError or AdapterUnavailableError.
        """
        ...
