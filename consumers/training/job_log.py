"""What the training worker's own log says about each job: its start (adapter, base, dataset rows,
steps and the settings chosen for it), its progress at most once per `every_s`, and its end
(outcome, time, final loss). Lines carry the job id as `request_id`, so `cli/logs.py` prints it
in both its text and its JSON form."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from consumers.training.jobs import PreparedJob
from gpu_engine.training.events import JobEvent
from schemas import TrainingRequest

log = logging.getLogger(__name__)


class JobLog:
    """The log lines of one job run; `clock` is injectable for tests."""

    def __init__(
        self,
        request: TrainingRequest,
        prepared: PreparedJob,
        base_name: str,
        *,
        every_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._request, self._prepared, self._base_name = request, prepared, base_name
        self._every_s, self._clock = every_s, clock
        self._started_s = clock()
        self._last_logged_s: float | None = None
        self._last_loss: float | None = None
        self._extra = {"request_id": request.job_id}

    def started(self, event: JobEvent) -> None:
        spec = self._prepared.spec
        resumed = f", resumed at step {event.resumed_from_step}" if event.resumed_from_step else ""
        log.info(
            "job %s started: adapter %s on base %s, %d dataset rows, %s steps on %s (quantization %s)%s; "
            "r %d, alpha %g, lr %g, targets %s, max_seq_len %d%s",
            self._request.job_id,
            self._request.adapter_id,
            self._base_name,
            self._prepared.num_rows,
            event.total_steps,
            event.device,
            event.quantization,
            resumed,
            spec.r,
            spec.alpha,
            spec.learning_rate,
            ",".join(spec.target_modules),
            spec.max_seq_len,
            f" ({self._prepared.notice})" if self._prepared.notice else "",
            extra=self._extra,
        )
        self._last_logged_s = self._clock()

    def progress(self, event: JobEvent) -> None:
        """Logged when `every_s` passed since the last line about this job."""
        if event.loss is not None:
            self._last_loss = event.loss
        now_s = self._clock()
        if self._last_logged_s is not None and now_s - self._last_logged_s < self._every_s:
            return
        self._last_logged_s = now_s
        eta = f", eta {event.eta_s:.0f}s" if event.eta_s is not None else ""
        loss = f"loss {event.loss:.4f}" if event.loss is not None else "no loss yet"
        log.info(
            "job %s step %s/%s: %s%s", self._request.job_id, event.step, event.total_steps, loss, eta,
            extra=self._extra,
        )

    def ended(self, outcome: str, event: JobEvent | None = None, reason: str | None = None) -> None:
        """`outcome`: completed, failed, cancelled, preempted."""
        loss = event.loss if event is not None and event.loss is not None else self._last_loss
        parts = [f"job {self._request.job_id} {outcome} after {self._clock() - self._started_s:.1f}s"]
        if event is not None and event.step is not None:
            parts.append(f"at step {event.step}/{event.total_steps}")
        if loss is not None:
            parts.append(f"final loss {loss:.4f}")
        if event is not None and event.eval_loss is not None:
            parts.append(f"eval loss {event.eval_loss:.4f}")
        if reason:
            parts.append(f"({reason})")
        level = logging.WARNING if outcome == "failed" else logging.INFO
        log.log(level, " ".join(parts), extra=self._extra)
