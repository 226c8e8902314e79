"""The inference consumer: requests from Kafka in, the engine's answers out (see service.py)."""

from consumers.inference.service import InferenceService, Runner

__all__ = ["InferenceService", "Runner"]
