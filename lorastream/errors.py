"""The project's one exception base. Every package (schemas, streamer, consumers, gpu_engine) derives from it.

It carries nothing: each subclass adds what its callers need (a wire code, an engine code, a request id).
"""

from __future__ import annotations


class LorastreamError(Exception):
    """Base of every exception lorastream raises on purpose; `except LorastreamError` catches them all."""
