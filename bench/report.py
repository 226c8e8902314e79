"""`make bench`: run every benchmark present in bench/, then regenerate docs/benchmarks.md.

Each benchmark module (engine, cache, kafka, train; a missing one is skipped) has
`main(argv)` taking `--json FILE --plot FILE [--quick]`; it runs in its own process, so one
that crashes cannot take the others down. Its old JSON and PNG are deleted first, and the
markdown is built only from the files this run wrote: every figure in docs/benchmarks.md comes
from this run, and a benchmark that failed says so instead of showing stale numbers.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BENCHMARKS = ("engine", "cache", "kafka", "train")
ROOT = Path(__file__).resolve().parents[1]
_NOT_TABLES = {"config", "environment", "samples", "raw", "ratios", "targets", "met"}
_RUNNER = "import importlib, sys; sys.exit(importlib.import_module(sys.argv[1]).main(sys.argv[2:]))"


@dataclass(frozen=True)
class BenchRun:
    name: str
    json_path: Path
    plot_path: Path
    wall_s: float
    returncode: int

    @property
    def is_ok(self) -> bool:
        return self.returncode == 0 and self.json_path.is_file()


def available(names: tuple[str, ...] = BENCHMARKS) -> list[str]:
    """The benchmark modules that exist in this checkout, in report order."""
    return [name for name in names if importlib.util.find_spec(f"bench.{name}") is not None]


def run_benchmark(name: str, out_dir: Path, quick: bool) -> BenchRun:
    """Run `bench.<name>.main(--json … --plot … [--quick])` in a child process; its output passes through."""
    json_path, plot_path = out_dir / f"{name}.json", out_dir / f"{name}.png"
    for stale in (json_path, plot_path):
        stale.unlink(missing_ok=True)
    argv = ["--json", str(json_path), "--plot", str(plot_path), *(["--quick"] if quick else [])]
    print(f"\n=== bench {name} {' '.join(argv)}", file=sys.stderr, flush=True)
    started = time.monotonic()
    code = subprocess.call([sys.executable, "-c", _RUNNER, f"bench.{name}", *argv], cwd=ROOT)
    return BenchRun(name, json_path, plot_path, time.monotonic() - started, code)


def summary(module: str) -> str:
    """The first paragraph of a benchmark module's docstring, read without importing it."""
    spec = importlib.util.find_spec(module)
    source = Path(spec.origin).read_text(encoding="utf-8") if spec and spec.origin else ""
    doc = ast.get_docstring(ast.parse(source)) or ""
    return " ".join(doc.split("\n\n")[0].split())


def fmt(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def leaves(body: dict, prefix: str = "") -> dict[str, object]:
    """Scalar values of a nested dict by dotted key; lists are left out (per-round samples)."""
    out: dict[str, object] = {}
    for key, value in body.items():
        if isinstance(value, dict):
            out.update(leaves(value, f"{prefix}{key}."))
        elif not isinstance(value, list):
            out[f"{prefix}{key}"] = value
    return out


def table(header: list[str], rows: list[list[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(cell) for cell in row) + " |" for row in rows]
    return lines + [""]


def headline_rows(result: dict) -> list[list[object]]:
    """(figure, value, target, met) for every ratio and every figure with a target."""
    ratios, targets, met = result.get("ratios", {}), result.get("targets", {}), result.get("met", {})
    names = list(ratios) + [name for name in targets if name not in ratios]
    rows = []
    for name in names:
        value = ratios.get(name, result.get(name))
        if isinstance(value, (int, float)):
            rows.append([name, value, targets.get(name, "—"), met.get(name, "—")])
    return rows


def measurement_tables(measurements: dict[str, dict]) -> list[str]:
    """A dict of dicts becomes a matrix (a row per key); flat dicts sharing their keys share a table."""
    lines: list[str] = []
    flat_groups: dict[tuple[str, ...], dict[str, dict]] = {}
    for name, body in measurements.items():
        if body and all(isinstance(v, dict) for v in body.values()):
            columns = list(dict.fromkeys(k for v in body.values() for k in leaves(v)))
            rows = [[row_key, *(leaves(v).get(c, "") for c in columns)] for row_key, v in body.items()]
            lines += [f"**{name}**", ""] + table([name, *columns], rows)
        elif leaves(body):
            flat = leaves(body)
            flat_groups.setdefault(tuple(flat), {})[name] = flat
    for keys, group in flat_groups.items():
        names = list(group)
        rows = [[key, *(group[n][key] for n in names)] for key in keys]
        lines += [f"**{', '.join(names)}**", ""] + table(["", *names], rows)
    return lines


def section(run: BenchRun, doc_dir: Path) -> list[str]:
    lines = [f"## {run.name}", "", summary(f"bench.{run.name}"), ""]
    if not run.is_ok:
        return lines + [f"**This benchmark failed in this run** (exit code {run.returncode}); no figures.", ""]
    result = json.loads(run.json_path.read_text())
    headline = headline_rows(result)
    if headline:
        lines += ["**Headline figures**", ""] + table(["figure", "value", "target", "met"], headline)
    shown = {row[0] for row in headline}
    lines += measurement_tables({k: v for k, v in result.items() if k not in _NOT_TABLES and isinstance(v, dict)})
    scalars = [[k, v] for k, v in result.items() if not isinstance(v, (dict, list)) and k not in shown]
    if scalars:
        lines += ["**Other figures**", ""] + table(["figure", "value"], scalars)
    if run.plot_path.is_file():
        lines += [f"![{run.name}]({os.path.relpath(run.plot_path, doc_dir)})", ""]
    setup = {**leaves(result.get("config", {})), **leaves(result.get("environment", {}), "environment.")}
    if setup:
        lines += ["<details><summary>configuration</summary>", ""]
        lines += table(["setting", "value"], [[k, v] for k, v in setup.items()]) + ["</details>", ""]
    return lines + [f"_Ran in {run.wall_s:.0f} s; raw results: `{os.path.relpath(run.json_path, ROOT)}`._", ""]


def render(runs: list[BenchRun], doc_path: Path, quick: bool) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmarks",
        "",
        (
            f"Generated by `make bench` (`python -m bench.report{' --quick' if quick else ''}`) on {now}: "
            f"{os.cpu_count()} CPU cores, {platform.platform()}, Python {platform.python_version()}. "
            "Every figure below was read from the JSON the benchmark wrote in that run; do not edit by hand."
        ),
        "",
        (
            "Benchmarks compare ratios measured within one run (noise on a shared machine slows both sides), "
            "never absolute times against a constant."
        ),
        "",
    ]
    if quick:
        lines += ["**Quick run** (`--quick`): short rounds, figures are indicative only.", ""]
    lines += table(
        ["benchmark", "result", "seconds"],
        [[f"[{r.name}](#{r.name})", "ok" if r.is_ok else "**failed**", round(r.wall_s)] for r in runs],
    )
    land = doc_path.parent / "land.md"
    if land.is_file():
        lines += [f"The LoRA Land story (adapters vs base, per task) is in [{land.name}]({land.name}).", ""]
    for run in runs:
        lines += section(run, doc_path.parent)
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "bench"), help="JSON/PNG folder (default docs/bench)")
    parser.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks.md"), help="(default docs/benchmarks.md)")
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    parser.add_argument("--only", action="append", choices=BENCHMARKS, help="run just this one (repeatable)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks, write the markdown; 1 when any benchmark failed."""
    args = parse_args(argv)
    out_dir, doc_path = Path(args.out).resolve(), Path(args.doc).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    names = available(tuple(args.only) if args.only else BENCHMARKS)
    runs = [run_benchmark(name, out_dir, args.quick) for name in names]
    doc_path.parent.mkdir(parents=True, exist_ok=True)
    doc_path.write_text(render(runs, doc_path, args.quick))
    print(
        f"\nwrote {doc_path}: " + ", ".join(f"{r.name} {'ok' if r.is_ok else 'FAILED'}" for r in runs), file=sys.stderr
    )
    return 0 if all(run.is_ok for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
