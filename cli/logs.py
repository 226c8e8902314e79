"""Console hygiene for every command: library noise off, then human-readable or JSON log lines.

`quiet_libraries()` runs first at process start-up (before torch, transformers or peft are
imported). It silences, each by name, what a user did not ask for — transformers' and the hub's
progress bars, transformers' advisory FutureWarnings, bitsandbytes' "no `kernels` package" notice
— and exports the same settings in the environment, so the processes this one starts (a training
job, a `serve` or `train-worker` under a supervisor) inherit them. A value the user already set
in the environment is left alone.

`configure()` writes log lines to stderr: one JSON object per line with `--log-format json`, or
when stderr is not a terminal (a log collector reads it); readable lines otherwise.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings

import orjson

LOG_FORMATS = ("auto", "json", "text")
LOG_FORMAT_ENV = "LORASTREAM_LOG_FORMAT"

QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' "Loading weights" bars follow the hub's switch
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TOKENIZERS_PARALLELISM": "false",  # else: a warning at the first fork after tokenizing
}
# (message prefix, category): advisory warnings from library internals, not from lorastream's use
QUIET_WARNINGS = (
    ("`is_gradient_checkpointing` is deprecated", FutureWarning),  # peft asks transformers >= 5 the old name
)
# logger → lowest level shown; bitsandbytes warns on import on AVX512-BF16 CPUs without `kernels`
QUIET_LOGGERS = {"bitsandbytes": logging.ERROR}


def quiet_libraries() -> None:
    """Silence the known library noise in this process and in the processes it starts."""
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    child_filters = [f"ignore:{message}:{category.__name__}" for message, category in QUIET_WARNINGS]
    inherited = [f for f in os.environ.get("PYTHONWARNINGS", "").split(",") if f]
    os.environ["PYTHONWARNINGS"] = ",".join(dict.fromkeys(inherited + child_filters))
    for message, category in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(message), category=category)
    for name, level in QUIET_LOGGERS.items():
        logger = logging.getLogger(name)
        logger.setLevel(max(logger.level, level))
    if "transformers" in sys.modules:  # imported before us: its bar switch was read at import
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            body["request_id"] = request_id
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(body).decode()


class TextFormatter(logging.Formatter):
    """`12:00:01 WARNING streamer.admin: message [request_id=…]`"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        return line if request_id is None else f"{line} [request_id={request_id}]"


def resolve_format(log_format: str, stream=None) -> str:
    """`json` or `text`; `auto` is text on a terminal and JSON anywhere else."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {LOG_FORMATS}, not {log_format!r}")
    if log_format != "auto":
        return log_format
    stream = stream or sys.stderr
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


def configure(level: str, log_format: str = "auto") -> None:
    quiet_libraries()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if resolve_format(log_format) == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiokafka").setLevel(max(root.level, logging.WARNING))
