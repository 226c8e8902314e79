"""The wheels the device check carries to a bare GPU image, and the checks on them (issue 19).

The device image (KINDS.md of the device tool: Python 3.12, torch 2.11 cu130, transformers 5.17,
triton 3.6, peft, pytest …) lacks two packages the engine tests and `bench.gpu` need:
bitsandbytes (the NF4 base) and google-re2 (`gpu_engine/adapter_patterns.py`). Everything else
they import is there once `tests/conftest.py` keeps the Kafka side out of import time.

- `download` (what `make gpu-wheels` runs, here, with network): `pip download --no-deps` of the
  pinned versions for CPython 3.12 on manylinux x86_64 into `.whl/`, emptied first so that one
  version of each is there; fails when the wheels plus the working tree exceed the 64 MiB that
  travels with a device call. Measured 2026-12: bitsandbytes 0.50.2 41.1 MiB (it carries one
  native library per CUDA version, cuda130 among them), google-re2 0.6 MiB; with the ~2 MiB
  tree, ~44 MiB travel, so the NF4-on-CUDA step runs.
- `check` (first step of `bench/gpu_check.sh` on the device, stdlib only): `.whl/` exists, holds
  exactly the pinned wheels, and their tags fit the running Python and machine. Fails loudly.
The CPU dry run installs nothing: its environment step (bench/gpu_env.py) requires every carried
package to import, which is what the install gives the device.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

DEVICE_PYTHON = (3, 12)  # the device image's python3 (KINDS.md, seen 2026-11)
TRAVEL_BUDGET_BYTES = 64 * 2**20  # working tree + carried paths per device call (device README)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")


@dataclass(frozen=True)
class CarriedWheel:
    project: str  # the name pip knows
    version: str  # pinned: the version the CPU suite runs with
    module: str  # the name it is imported by

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version}"

    @property
    def file_prefix(self) -> str:
        """How a wheel file of this project starts (PEP 427 escapes '-' in the name as '_')."""
        return self.project.replace("-", "_").lower() + "-"


CARRIED = (
    CarriedWheel("bitsandbytes", "0.50.2", "bitsandbytes"),
    CarriedWheel("google-re2", "1.1.20251105", "re2"),
)


@dataclass(frozen=True)
class WheelName:
    project: str
    version: str
    python_tags: tuple[str, ...]
    abi_tags: tuple[str, ...]
    platform_tags: tuple[str, ...]

    @classmethod
    def parse(cls, filename: str) -> WheelName:
        if not filename.endswith(".whl"):
            raise ValueError(f"not a wheel: {filename}")
        parts = filename[: -len(".whl")].split("-")
        if len(parts) not in (5, 6):  # name-version(-build)?-python-abi-platform
            raise ValueError(f"not a wheel file name: {filename}")
        python, abi, plat = (tuple(tag.split(".")) for tag in parts[-3:])
        return cls(parts[0].lower(), parts[1], python, abi, plat)

    def problems(self, python: tuple[int, int], machine: str) -> list[str]:
        """Why pip would refuse this wheel on that Python and machine (empty: it fits)."""
        cp = f"cp{python[0]}{python[1]}"
        found = []
        if not {"py3", f"py{python[0]}{python[1]}", cp}.intersection(self.python_tags):
            found.append(f"Python tag {'.'.join(self.python_tags)} does not fit Python {python[0]}.{python[1]}")
        if not {"none", "abi3", cp}.intersection(self.abi_tags):
            found.append(f"ABI tag {'.'.join(self.abi_tags)} does not fit {cp}")
        if "any" not in self.platform_tags and not any(tag.endswith(machine) for tag in self.platform_tags):
            found.append(f"platform {'.'.join(self.platform_tags)} does not fit {machine}")
        return found


def wheel_problems(wheel_dir: Path, python: tuple[int, int], machine: str) -> list[str]:
    """Everything wrong with `wheel_dir` as the carried wheel set (empty: install it)."""
    if not wheel_dir.is_dir():
        return [f"{wheel_dir}/ is missing: run `make gpu-wheels` where pip can reach PyPI, "
                f"then call the device with carry=['{wheel_dir.name}']"]
    files = sorted(path.name for path in wheel_dir.glob("*.whl"))
    found: list[str] = []
    for wheel in CARRIED:
        mine = [name for name in files if name.lower().startswith(wheel.file_prefix)]
        if not mine:
            found.append(f"{wheel.requirement}: no wheel in {wheel_dir}/")
            continue
        if len(mine) > 1:
            found.append(f"{wheel.project}: {len(mine)} wheels ({', '.join(mine)}); two versions stop the install")
        for name in mine:
            parsed = WheelName.parse(name)
            if parsed.version != wheel.version:
                found.append(f"{name}: version {parsed.version}, the check pins {wheel.version}")
            found += [f"{name}: {problem}" for problem in parsed.problems(python, machine)]
    expected = tuple(wheel.file_prefix for wheel in CARRIED)
    found += [f"{name}: not a carried wheel (rerun `make gpu-wheels`)" for name in files
              if not name.lower().startswith(expected)]
    return found


def tree_bytes(root: Path) -> int:
    """Bytes of what a device call sends: tracked plus untracked, not ignored, files."""
    listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=root, capture_output=True, check=True).stdout
    paths = (root / name for name in listing.decode().split("\0") if name)
    return sum(path.stat().st_size for path in paths if path.is_file())


def download(dest: Path, root: Path) -> int:
    dest.mkdir(parents=True, exist_ok=True)
    for stale in dest.glob("*.whl"):
        stale.unlink()
    platforms = [arg for plat in PLATFORMS for arg in ("--platform", plat)]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--implementation", "cp",
               "--python-version", f"{DEVICE_PYTHON[0]}.{DEVICE_PYTHON[1]}", *platforms, "-d", str(dest),
               *(wheel.requirement for wheel in CARRIED)]
    if subprocess.run(command).returncode != 0:
        print("gpu-wheels: pip download failed", file=sys.stderr)
        return 1
    problems = wheel_problems(dest, DEVICE_PYTHON, "x86_64")
    wheels = sorted(dest.glob("*.whl"))
    wheel_total, tree = sum(path.stat().st_size for path in wheels), tree_bytes(root)
    for path in wheels:
        print(f"{path.stat().st_size / 2**20:8.1f} MiB  {path.name}")
    print(f"{wheel_total / 2**20:8.1f} MiB  wheels; {tree / 2**20:.1f} MiB working tree; "
          f"{(wheel_total + tree) / 2**20:.1f} of {TRAVEL_BUDGET_BYTES / 2**20:.0f} MiB a device call carries")
    if wheel_total + tree > TRAVEL_BUDGET_BYTES:
        problems.append("wheels plus working tree exceed what a device call carries")
    for problem in problems:
        print(f"gpu-wheels: {problem}", file=sys.stderr)
    return 1 if problems else 0


def check(wheel_dir: Path) -> int:
    python, machine = sys.version_info[:2], platform.machine()
    problems = wheel_problems(wheel_dir, python, machine)
    for problem in problems:
        print(f"WHEELS UNUSABLE: {problem}", file=sys.stderr)
    if not problems:
        print(f"wheels: {len(CARRIED)} carried wheels fit Python {python[0]}.{python[1]} on {machine}")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_wheels", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("download", help="pip download the carried wheels (make gpu-wheels)")
    fetch.add_argument("--dest", type=Path, default=Path(".whl"))
    checked = commands.add_parser("check", help="the wheel dir fits this Python and machine")
    checked.add_argument("--dir", type=Path, default=Path(".whl"))
    args = parser.parse_args(argv)
    if args.command == "download":
        return download(args.dest, Path.cwd())
    return check(args.dir)


if __name__ == "__main__":
    raise SystemExit(main())
