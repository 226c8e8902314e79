"""lorastream events: msgspec Structs for every record on every topic, their limits and codecs.

Imports msgspec only (never torch or Kafka).
"""

from schemas.adapters import AdapterEvent
from schemas.codec import (
    decode,
    decode_adapter_event,
    decode_control,
    decode_reply,
    decode_request,
    decode_training_event,
    decode_training_request,
    encode,
)
from schemas.deadletter import DeadLetter
from schemas.errors import ErrorCode, InvalidEvent, LorastreamError
from schemas.inference import (
    CancelRequest,
    ChatMessage,
    ChunkBatch,
    Error,
    Final,
    FinishReason,
    InferenceRequest,
    ReplyAddress,
    ReplyRecord,
    ReplyWire,
    SamplingParams,
    Timings,
    TokenChunk,
    Usage,
)
from schemas.limits import SCHEMA_VERSION
from schemas.training import (
    CancelJob,
    DatasetRef,
    Hyperparameters,
    JobState,
    TrainingEvent,
    TrainingRequest,
)

__all__ = [
    "SCHEMA_VERSION",
    "AdapterEvent",
    "CancelJob",
    "CancelRequest",
    "ChatMessage",
    "ChunkBatch",
    "DatasetRef",
    "DeadLetter",
    "Error",
    "ErrorCode",
    "Final",
    "FinishReason",
    "Hyperparameters",
    "InferenceRequest",
    "InvalidEvent",
    "JobState",
    "LorastreamError",
    "ReplyAddress",
    "ReplyRecord",
    "ReplyWire",
    "SamplingParams",
    "Timings",
    "TokenChunk",
    "TrainingEvent",
    "TrainingRequest",
    "Usage",
    "decode",
    "decode_adapter_event",
    "decode_control",
    "decode_reply",
    "decode_request",
    "decode_training_event",
    "decode_training_request",
    "encode",
]
