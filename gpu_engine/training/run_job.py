"""`python -m gpu_engine.training.run_job SPEC.json`: run one training job in this process.

Protocol: stdout carries JobEvents only, one JSON object per line (started, progress,
checkpointed, then exactly one of completed / failed / cancelled / preempted); anything else a
library prints goes to stderr. Control arrives on stdin, one word a line: `cancel` (stop, no
checkpoint) or `preempt` (checkpoint, then stop; a rerun resumes). SIGTERM means cancel; the
parent process dying (this one is re-parented) means preempt. Exit status: 0 for
completed/cancelled/preempted, 1 for failed, 2 for bad usage."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import traceback
from typing import TextIO

from gpu_engine.training.errors import JobCancelled, JobPreempted, TrainErrorCode, TrainingError
from gpu_engine.training.events import JobEvent, JobEventKind, StopSignal
from gpu_engine.training.spec import TrainJobSpec

_PARENT_CHECK_S = 1.0
_QUIET_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def claim_stdout() -> TextIO:
    """A line-buffered writer on the original stdout; fd 1 itself now points at stderr."""
    events_fd = os.dup(1)
    os.dup2(2, 1)
    return os.fdopen(events_fd, "w", buffering=1)


def listen_for_control(stream: TextIO, stop: StopSignal) -> None:
    """Daemon threads: one reads control words from `stream`, one watches for the parent dying."""

    def read() -> None:
        for line in stream:
            word = line.strip()
            if word == "cancel":
                stop.cancel()
            elif word == "preempt":
                stop.preempt()

    def watch_parent(parent_pid: int) -> None:
        while os.getppid() == parent_pid:
            time.sleep(_PARENT_CHECK_S)
        stop.preempt()  # nobody is listening any more: keep the work for a rerun

    threading.Thread(target=read, name="job-control", daemon=True).start()
    threading.Thread(target=watch_parent, args=(os.getppid(),), name="job-parent", daemon=True).start()


def run(spec_path: str, out: TextIO, stop: StopSignal) -> int:
    """Run the job at `spec_path`, writing its events to `out`; return the exit status."""

    def emit(event: JobEvent) -> None:
        out.write(event.to_line() + "\n")

    try:
        spec = TrainJobSpec.load(spec_path)
    except (OSError, ValueError) as exc:
        emit(JobEvent(JobEventKind.FAILED, code=TrainErrorCode.INVALID_SPEC.value, reason=f"bad spec file: {exc}"))
        return 1
    from gpu_engine.training.trainer import run_training  # torch: only once the spec is sound

    try:
        result = run_training(spec, emit, stop)
    except JobCancelled as exc:
        emit(JobEvent(JobEventKind.CANCELLED, code=exc.code.value, reason=str(exc)))
        return 0
    except JobPreempted as exc:
        emit(JobEvent(JobEventKind.PREEMPTED, step=exc.step, code=exc.code.value, reason=str(exc)))
        return 0
    except TrainingError as exc:
        emit(JobEvent(JobEventKind.FAILED, code=exc.code.value, reason=str(exc)))
        return 1
    except Exception as exc:  # a bug or a resource failure: report it instead of vanishing
        traceback.print_exc()
        emit(JobEvent(JobEventKind.FAILED, code=TrainErrorCode.INTERNAL.value, reason=f"{type(exc).__name__}: {exc}"))
        return 1
    emit(
        JobEvent(
            JobEventKind.COMPLETED,
            step=result.steps,
            total_steps=result.steps,
            loss=result.final_loss,
            eval_loss=result.eval_loss,
            tokens_per_s=result.tokens_per_s,
            quantization=result.quantization,
            device=result.device,
            resumed_from_step=result.resumed_from_step,
            adapter_dir=result.adapter_dir,
            checksum=result.checksum,
            metrics=result.metrics(),
        )
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # its notice about an optional `kernels` package is noise here
    out = claim_stdout()
    stop = StopSignal()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.cancel())
    listen_for_control(sys.stdin, stop)
    return run(argv[0], out, stop)


if __name__ == "__main__":
    sys.exit(main())
