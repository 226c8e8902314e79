"""The inference consumer: requests from a transport in, the engine's answers out (see service.py)."""

from consumers.inference.admission import EngineHandle
from consumers.inference.service import InferenceService

__all__ = ["InferenceService", "EngineHandle"]
