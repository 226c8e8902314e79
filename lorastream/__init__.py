"""lorastream: the one place every package shares — the project's version and its exception base."""

from importlib.metadata import PackageNotFoundError, version

from lorastream.errors import LorastreamError

try:
    __version__ = version("lorastream")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["LorastreamError", "__version__"]
