"""What the device check needs of the machine, and what it requires of its test runs (issue 19).

`check` prints the versions and the toolchain first and stops the run (exit 3) with one line per
unmet requirement, before any minute goes to tests that could not mean anything:
- torch >= 2.9 (`grouped_mm`), transformers >= 5 (the loader passes `dtype=`; an older one would
  load fp32 weights beside a bf16 KV cache and LoRA bank), peft >= 0.17, triton, and the carried
  packages (bench/gpu_wheels.py: bitsandbytes, re2) importable;
- on CUDA only: a GPU torch can use, an NF4 round trip through bitsandbytes' CUDA library, and a C
  compiler that builds a file including Python.h (Triton compiles its launcher at first call).
  On the CPU (`--cpu`, the dry run) the compiler and headers are reported, not required: Triton's
  interpreter builds nothing.

`tests` reads a pytest JUnit XML report: with `--cuda` every selected test must have passed (a
skip on the device is a failure: it would hide a missing GPU or library); on the CPU the tests
named by `--expect-skipped` must have been collected and skipped, every other one passed.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from bench.gpu_wheels import CARRIED

MINIMUM = {"torch": "2.9", "transformers": "5.0", "peft": "0.17"}
REQUIRED_MODULES = ("torch", "triton", "transformers", "peft", *(wheel.module for wheel in CARRIED))


def module_version(name: str) -> str | None:
    """The module's version, "unknown" when it has none, None when it does not import."""
    try:
        module = importlib.import_module(name)
    except Exception:  # a broken install is as absent as a missing one
        return None
    version = getattr(module, "__version__", None)
    if version is None:  # re2 has none: ask the distribution that provides it
        dists = importlib.metadata.packages_distributions().get(name, [])
        version = importlib.metadata.version(dists[0]) if dists else "unknown"
    return str(version)


def c_compiler() -> str | None:
    """The compiler Triton's launcher build picks: $CC, else gcc, else clang, else cc."""
    return os.environ.get("CC") or shutil.which("gcc") or shutil.which("clang") or shutil.which("cc")


def compiles_with_python_h(compiler: str) -> str | None:
    """None when `compiler` builds a file including Python.h, else why not."""
    include = sysconfig.get_paths()["include"]
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "probe.c"
        source.write_text("#include <Python.h>\nint probe(void) { return Py_IsInitialized(); }\n")
        result = subprocess.run([compiler, "-c", str(source), "-I", include, "-o", str(Path(tmp) / "probe.o")],
                                capture_output=True, text=True, timeout=60)
    return None if result.returncode == 0 else (result.stderr.strip().splitlines() or ["failed"])[-1]


def gpu_record() -> dict[str, object]:
    import torch

    if not torch.cuda.is_available():
        return {"cuda_available": False}
    major, minor = torch.cuda.get_device_capability(0)
    record: dict[str, object] = {"cuda_available": True, "gpu": torch.cuda.get_device_name(0),
                                 "capability": f"{major}.{minor}", "torch_cuda": torch.version.cuda}
    smi = shutil.which("nvidia-smi")
    if smi:
        result = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=30)
        record["driver"] = result.stdout.strip() or result.stderr.strip()
    return record


def collect() -> dict[str, object]:
    """Versions, toolchain and GPU as this process sees them (no requirement applied)."""
    record: dict[str, object] = {"python": sys.version.split()[0], "executable": sys.executable}
    record.update({name: module_version(name) for name in REQUIRED_MODULES})
    record["cc"] = c_compiler()
    if record["cc"]:
        result = subprocess.run([str(record["cc"]), "--version"], capture_output=True, text=True, timeout=30)
        record["cc_version"] = (result.stdout.splitlines() or ["unknown"])[0]
    record["python_h"] = str(Path(sysconfig.get_paths()["include"]) / "Python.h")
    record["python_h_exists"] = Path(str(record["python_h"])).is_file()
    record["triton_interpret"] = os.environ.get("TRITON_INTERPRET")
    if record["torch"] is not None:
        record.update(gpu_record())
    return record


def nf4_round_trip(device: str) -> str | None:
    """None when bitsandbytes quantizes to NF4 and back on `device` within NF4's error, else why not."""
    import torch

    try:
        from bitsandbytes.functional import dequantize_4bit, quantize_4bit

        weight = torch.randn(256, 256, device=device, dtype=torch.float16)
        packed, state = quantize_4bit(weight, quant_type="nf4")
        restored = dequantize_4bit(packed, state, quant_type="nf4")
        error = ((restored.float() - weight.float()).norm() / weight.float().norm()).item()
    except Exception as exc:  # the library's own message is the finding
        return f"{type(exc).__name__}: {exc}"
    # NF4 of Gaussian weights in blocks of 64: ~0.09 relative error (measured on the CPU here)
    return None if error < 0.15 else f"NF4 round trip: relative error {error:.3f}, NF4 gives ~0.09"


def unmet(record: dict[str, object], cuda: bool) -> list[str]:
    """One line per requirement the record does not meet."""
    from packaging.version import Version

    found = [f"{name} does not import" for name in REQUIRED_MODULES if record.get(name) is None]
    for name, minimum in MINIMUM.items():
        version = record.get(name)
        if version is not None and Version(str(version).split("+")[0]) < Version(minimum):
            found.append(f"{name} {version} < {minimum}")
    if cuda:
        if not record.get("cuda_available"):
            found.append("torch sees no CUDA GPU")
        if not record.get("cc"):
            found.append("no C compiler (gcc, clang, cc or $CC): Triton cannot build its launcher")
        elif record.get("cc_python_h_error"):
            found.append(f"{record['cc']} cannot build against {record['python_h']}: {record['cc_python_h_error']}")
        if record.get("nf4_error"):
            found.append(f"bitsandbytes NF4 on CUDA: {record['nf4_error']}")
    return found


def check(cuda: bool, json_path: Path | None) -> int:
    record = collect()
    if record.get("cc"):
        record["cc_python_h_error"] = compiles_with_python_h(str(record["cc"]))
    if record.get("bitsandbytes") is not None and record.get("torch") is not None:
        record["nf4_error"] = nf4_round_trip("cuda" if cuda and record.get("cuda_available") else "cpu")
    problems = unmet(record, cuda)
    record["unmet"] = problems
    for key, value in record.items():
        print(f"{key:>18}: {value}")
    if json_path:
        json_path.write_text(json.dumps(record, indent=1) + "\n")
    for problem in problems:
        print(f"REQUIREMENT UNMET: {problem}", file=sys.stderr)
    return 3 if problems else 0


def read_outcomes(junit_xml: Path) -> dict[str, str]:
    """test id (module::name[params]) -> passed | skipped: reason | failed | error."""
    outcomes = {}
    for case in ET.parse(junit_xml).getroot().iter("testcase"):
        test_id = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        skipped, failure, error = case.find("skipped"), case.find("failure"), case.find("error")
        if error is not None:
            outcomes[test_id] = "error"
        elif failure is not None:
            outcomes[test_id] = "failed"
        elif skipped is not None:
            outcomes[test_id] = f"skipped: {skipped.get('message', '')}"
        else:
            outcomes[test_id] = "passed"
    return outcomes


def judge_outcomes(outcomes: dict[str, str], cuda: bool, expect_skipped: list[str]) -> list[str]:
    """What is wrong with these outcomes for a device run (`cuda`) or a CPU dry run."""
    found = [] if outcomes else ["no test ran"]
    for name in expect_skipped:
        if not any(test_id == name or test_id.endswith(name) for test_id in outcomes):
            found.append(f"{name} was not collected")
    for test_id, outcome in outcomes.items():
        expected_skip = any(test_id == name or test_id.endswith(name) for name in expect_skipped)
        if outcome == "passed" and expected_skip and not cuda:
            found.append(f"{test_id} passed where it should have been skipped (CUDA-only)")
        elif outcome.startswith("skipped") and (cuda or not expected_skip):
            found.append(f"{test_id} {outcome}")
        elif outcome in ("failed", "error"):
            found.append(f"{test_id} {outcome}")
    return found


def judge_tests(junit_xml: Path, cuda: bool, expect_skipped: list[str]) -> int:
    outcomes = read_outcomes(junit_xml)
    problems = judge_outcomes(outcomes, cuda, expect_skipped)
    counts = {kind: sum(o.split(":")[0] == kind for o in outcomes.values()) for kind in ("passed", "skipped")}
    print(f"{junit_xml.name}: {len(outcomes)} tests, {counts['passed']} passed, {counts['skipped']} skipped")
    for problem in problems:
        print(f"TEST RUN NOT ACCEPTED: {problem}", file=sys.stderr)
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_env", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    env = commands.add_parser("check", help="print versions and toolchain; exit 3 on an unmet requirement")
    runs = commands.add_parser("tests", help="judge a pytest JUnit XML report")
    for sub in (env, runs):
        where = sub.add_mutually_exclusive_group(required=True)
        where.add_argument("--cuda", dest="cuda", action="store_true", help="the device run")
        where.add_argument("--cpu", dest="cuda", action="store_false", help="the CPU dry run")
    env.add_argument("--json", type=Path, help="write the record as JSON here")
    runs.add_argument("junit_xml", type=Path)
    runs.add_argument("--expect-skipped", action="append", default=[], metavar="TEST",
                      help="on the CPU: a test (module::name[params]) that must be collected and skipped")
    args = parser.parse_args(argv)
    if args.command == "check":
        return check(args.cuda, args.json)
    return judge_tests(args.junit_xml, args.cuda, args.expect_skipped)


if __name__ == "__main__":
    raise SystemExit(main())
