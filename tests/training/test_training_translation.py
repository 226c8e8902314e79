"""The one schema ↔ engine mapping of the training worker (consumers/training/translation.py)."""

from __future__ import annotations

import dataclasses

import msgspec
import pytest

from consumers.training.translation import (
    ENGINE_ONLY_FIELDS,
    MAX_REASON_CHARS,
    SAME_NAMED_FIELDS,
    TRANSLATED_FIELDS,
    relayed_event,
    training_event,
    training_wire_code,
)
from gpu_engine.training.errors import TrainErrorCode
from gpu_engine.training.events import JobEvent, JobEventKind
from schemas import ErrorCode, JobState, TrainingEvent, decode, encode


def test_every_job_event_field_is_mapped_translated_or_engine_only() -> None:
    """A field added to JobEvent must be given a place here before the worker can carry it."""
    job_fields = [f.name for f in dataclasses.fields(JobEvent)]
    placed = [*SAME_NAMED_FIELDS, *TRANSLATED_FIELDS, *ENGINE_ONLY_FIELDS]
    assert sorted(job_fields) == sorted(placed)
    assert set(SAME_NAMED_FIELDS) <= set(TrainingEvent.__struct_fields__)


def test_every_training_error_code_has_a_wire_code() -> None:
    table = {code: training_wire_code(code.value) for code in TrainErrorCode}
    assert table[TrainErrorCode.DATASET_REFUSED] is ErrorCode.DATASET_REFUSED
    assert table[TrainErrorCode.DATASET_TOO_LARGE] is ErrorCode.DATASET_REFUSED
    assert table[TrainErrorCode.DATASET_INVALID] is ErrorCode.INVALID_REQUEST
    assert table[TrainErrorCode.CANCELLED] is ErrorCode.CANCELLED
    assert table[TrainErrorCode.INTERNAL] is ErrorCode.INTERNAL
    assert training_wire_code(None) is training_wire_code("no-such-code") is ErrorCode.INTERNAL


def test_a_progress_report_carries_every_measurement_and_no_code() -> None:
    event = JobEvent(
        JobEventKind.PROGRESS, step=3, total_steps=10, loss=1.5, eval_loss=1.7, learning_rate=2e-4,
        tokens_per_s=900.0, eta_s=12.0, quantization="none", device="cpu", metrics={"grad_norm": 0.5},
    )  # fmt: skip
    wire = relayed_event(event, job_id="j", attempt=2, cancel_requested=False)
    assert (wire.job_id, wire.state, wire.attempt, wire.code, wire.reason) == ("j", JobState.PROGRESS, 2, None, None)
    assert {name: getattr(wire, name) for name in SAME_NAMED_FIELDS} == {
        name: getattr(event, name) for name in SAME_NAMED_FIELDS
    }
    assert decode(encode(wire), TrainingEvent) == wire  # valid on the wire


@pytest.mark.parametrize(
    ("kind", "code", "cancel_requested", "state", "wire_code", "reason"),
    [
        (JobEventKind.FAILED, "dataset_refused", False, JobState.FAILED, ErrorCode.DATASET_REFUSED, "dataset_refused: r"),
        (JobEventKind.FAILED, "diverged", False, JobState.FAILED, ErrorCode.INVALID_REQUEST, "diverged: r"),
        (JobEventKind.FAILED, "internal", True, JobState.CANCELLED, ErrorCode.CANCELLED, "r"),  # killed after grace
        (JobEventKind.CANCELLED, "cancelled", True, JobState.CANCELLED, ErrorCode.CANCELLED, "r"),
        (JobEventKind.STARTED, None, False, JobState.STARTED, None, None),
        (JobEventKind.CHECKPOINTED, None, True, JobState.CHECKPOINTED, None, None),
    ],
)
def test_terminal_reports_carry_their_wire_code_and_reason(kind, code, cancel_requested, state, wire_code, reason) -> None:
    wire = relayed_event(JobEvent(kind, code=code, reason="r"), job_id="j", attempt=0, cancel_requested=cancel_requested)
    assert (wire.state, wire.code, wire.reason) == (state, wire_code, reason)


@pytest.mark.parametrize("kind", [JobEventKind.COMPLETED, JobEventKind.PREEMPTED])
def test_completed_and_preempted_are_not_relayed_as_they_are(kind) -> None:
    with pytest.raises(ValueError):
        relayed_event(JobEvent(kind), job_id="j", attempt=0, cancel_requested=False)


def test_non_finite_measurements_are_left_out_and_reasons_bounded() -> None:
    event = JobEvent(JobEventKind.PROGRESS, loss=float("nan"), eta_s=float("inf"), metrics={"a": float("-inf"), "b": 1.0})
    wire = training_event("j", JobState.FAILED, attempt=0, job_event=event, reason="x" * 5000)
    assert wire.loss is None and wire.eta_s is None and wire.metrics == {"b": 1.0}
    assert len(wire.reason) == MAX_REASON_CHARS and wire.reason.endswith("…")
    assert msgspec.json.decode(encode(wire))["reason"] == wire.reason
