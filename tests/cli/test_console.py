"""A clean console: no library progress bars or advisory warnings, and log lines in the right format.

The noisy path is the real one: build a tiny model and a PEFT adapter, then load both through
the model loader a `serve` uses. Run in fresh interpreters, because the noise comes from import
time (bitsandbytes) and from switches read once (transformers' progress bars).
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cli.logs import QUIET_ENV, configure, resolve_format

ROOT = Path(__file__).resolve().parents[2]
NOISE = (
    "Loading weights",  # transformers' progress bar
    "Writing model shards",  # transformers' progress bar
    "it/s]",  # any tqdm bar
    "FutureWarning",
    "gemm_4bit_forward",  # bitsandbytes, on AVX512-BF16 CPUs without the `kernels` package
    "kernels",
)
_LOAD = """
from gpu_engine.tiny import build_tiny_adapter, build_tiny_model
from gpu_engine.config import EngineConfig
from gpu_engine.engine import Engine
out = sys.argv[1]
build_tiny_model(out + "/model", hidden=32, layers=1, heads=2, kv_heads=1)
build_tiny_adapter(out + "/model", out + "/adapters/a", r=4, alpha=8, target_modules=("q_proj",), seed=1)
Engine(EngineConfig(model_path=out + "/model", adapter_root=out + "/adapters", device="cpu"))
print("loaded")
"""


def _run(script: str, workdir: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "PYTHONWARN"))}
    environment.update(env or {})
    result = subprocess.run(
        [sys.executable, "-c", "import sys\n" + textwrap.dedent(script), str(workdir)],
        capture_output=True, text=True, timeout=240, cwd=ROOT, env=environment,
    )
    assert result.returncode == 0 and "loaded" in result.stdout, result.stderr
    return result


def _noise(stderr: str) -> list[str]:
    return [marker for marker in NOISE if marker in stderr]


@pytest.fixture(scope="module")
def noisy_stderr(tmp_path_factory) -> str:
    """Without the start-up filters, the same path prints library noise (what the filters are for)."""
    return _run(_LOAD, tmp_path_factory.mktemp("noisy")).stderr


def test_the_model_path_is_noisy_without_the_filters(noisy_stderr):
    assert "Loading weights" in noisy_stderr and "FutureWarning" in noisy_stderr


def test_start_up_filters_silence_the_libraries(tmp_path, noisy_stderr):
    script = "from cli.logs import configure\nconfigure('INFO', 'text')\n" + _LOAD
    assert _noise(_run(script, tmp_path).stderr) == []


def test_child_processes_inherit_the_quiet_settings(tmp_path, noisy_stderr):
    """The parent's start-up exports the settings; a child that never calls them is quiet too."""
    parent = f"""
from cli.logs import quiet_libraries
import subprocess
quiet_libraries()
child = subprocess.run([sys.executable, "-c", "import sys\\n" + {_LOAD!r}, sys.argv[1]], capture_output=True, text=True)
sys.stderr.write(child.stderr)
print(child.stdout)
"""
    stderr = _run(parent, tmp_path).stderr
    # bitsandbytes' notice is a log record, which no environment variable turns off: a child that
    # configures logging itself must name the logger (QUIET_LOGGERS), as `lorastream` does.
    assert [m for m in _noise(stderr) if m not in ("gemm_4bit_forward", "kernels")] == []


def test_a_user_setting_wins_over_the_quiet_default(tmp_path):
    script = "from cli.logs import quiet_libraries\nquiet_libraries()\nimport os\nprint(os.environ['HF_HUB_DISABLE_PROGRESS_BARS'])\nprint('loaded')"
    assert _run(script, tmp_path, {"HF_HUB_DISABLE_PROGRESS_BARS": "0"}).stdout.split()[0] == "0"


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_log_format_is_text_on_a_terminal_and_json_elsewhere():
    assert resolve_format("auto", _Stream(tty=True)) == "text"
    assert resolve_format("auto", _Stream(tty=False)) == "json"
    assert resolve_format("json", _Stream(tty=True)) == "json"
    assert resolve_format("text", _Stream(tty=False)) == "text"
    with pytest.raises(ValueError):
        resolve_format("yaml")


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_configured_lines(log_format, monkeypatch):
    for name in (*QUIET_ENV, "PYTHONWARNINGS"):  # configure() exports these; put them back after
        monkeypatch.delenv(name, raising=False)
    stream = _Stream(tty=False)
    monkeypatch.setattr(sys, "stderr", stream)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure("INFO", log_format)
        logging.getLogger("lorastream.test").info("hello %s", "there", extra={"request_id": "r-1"})
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    line = stream.getvalue().strip()
    if log_format == "json":
        body = json.loads(line)
        assert (body["level"], body["logger"], body["msg"], body["request_id"]) == ("INFO", "lorastream.test", "hello there", "r-1")
    else:
        assert line.endswith("INFO lorastream.test: hello there [request_id=r-1]")

