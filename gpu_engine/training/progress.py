"""Throughput, ETA and the bounded rate of progress reports. Pure Python (no torch)."""

from __future__ import annotations


class ProgressMeter:
    """Counts the steps and tokens of this run (a resumed job counts from where it resumed).

    A report is due when `interval_s` passed since the last one, and always at the last step.
    """

    def __init__(self, total_steps: int, start_step: int, interval_s: float, now_s: float) -> None:
        self.total_steps = total_steps
        self.start_step = start_step
        self.interval_s = interval_s
        self.step = start_step
        self.num_tokens = 0
        self._start_s = now_s
        self._last_report_s = now_s
        self._now_s = now_s

    def step_done(self, step: int, num_tokens: int, now_s: float) -> None:
        """Optimizer step `step` (1-based count of steps done) processed `num_tokens` tokens."""
        self.step = step
        self.num_tokens += num_tokens
        self._now_s = now_s

    def is_due(self, now_s: float) -> bool:
        return self.step >= self.total_steps or now_s - self._last_report_s >= self.interval_s

    def mark_reported(self, now_s: float) -> None:
        self._last_report_s = now_s

    @property
    def elapsed_s(self) -> float:
        return self._now_s - self._start_s

    @property
    def tokens_per_s(self) -> float:
        return self.num_tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        done = self.step - self.start_step
        if done <= 0:
            return None
        return (self.total_steps - self.step) * self.elapsed_s / done
