"""The import graph between the top-level packages, read from the source with `ast`.

Imports flow schemas <- streamer <- consumers -> gpu_engine; the CLI, the demo and LoRA Land sit
on top; `lorastream` (the version and the exception base) is under everything. The development
packages, `bench` (benchmarks) and `devbrokers` (Apache Kafka from jars), are not in the wheel:
nothing the runtime imports may need them. Every `import`/`from` statement counts, wherever it
is (inside a function, under `if TYPE_CHECKING:`): a cycle hidden in a function is still a cycle.
The one exception is the CLI's `bench` command, which imports `bench` inside the function and
says where to run benchmarks when the package is absent.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = {"lorastream", "schemas", "streamer", "consumers", "gpu_engine", "cli", "land", "gateway"}
DEVELOPMENT = {"bench", "devbrokers"}
# (module file, package it imports) that may import a development package, from inside a function
LAZY_DEVELOPMENT_IMPORTS = {("cli/commands.py", "bench")}


@dataclass(frozen=True)
class Edge:
    source: str  # importing package
    target: str  # imported package
    path: str  # importing file, relative to the repository root
    line: int
    is_lazy: bool  # inside a function body

    def __str__(self) -> str:
        return f"{self.path}:{self.line} imports {self.target}{' (in a function)' if self.is_lazy else ''}"


@cache
def packages() -> frozenset[str]:
    """Top-level directories with an __init__.py: the repository's packages."""
    return frozenset(
        p.parent.name for p in ROOT.glob("*/__init__.py") if not p.parent.name.startswith(".")
    )


class _Imports(ast.NodeVisitor):
    def __init__(self) -> None:
        self.found: list[tuple[str, int, bool]] = []  # (imported module, line, in a function)
        self._depth = 0

    def _function(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_Import(self, node: ast.Import) -> None:
        self.found += [(alias.name, node.lineno, self._depth > 0) for alias in node.names]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:  # a relative import stays inside its package
            self.found.append((node.module, node.lineno, self._depth > 0))


@cache
def edges() -> tuple[Edge, ...]:
    found = []
    for package in sorted(packages()):
        for path in sorted((ROOT / package).rglob("*.py")):
            visitor = _Imports()
            visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
            for module, line, is_lazy in visitor.found:
                target = module.split(".")[0]
                if target in packages() and target != package:
                    found.append(Edge(package, target, str(path.relative_to(ROOT)), line, is_lazy))
    return tuple(found)


def imports_of(package: str) -> dict[str, list[str]]:
    """Imported package -> where, for one importing package."""
    out: dict[str, list[str]] = {}
    for edge in edges():
        if edge.source == package:
            out.setdefault(edge.target, []).append(str(edge))
    return out


def outside(package: str, allowed: set[str]) -> dict[str, list[str]]:
    return {target: where for target, where in imports_of(package).items() if target not in allowed}


def test_the_graph_sees_every_package_and_real_imports():
    assert RUNTIME | DEVELOPMENT | {"tests"} <= packages()
    pairs = {(e.source, e.target) for e in edges()}
    assert {("consumers", "gpu_engine"), ("consumers", "streamer"), ("streamer", "schemas")} <= pairs
    assert {("bench", "consumers"), ("bench", "devbrokers"), ("tests", "devbrokers")} <= pairs


def test_lorastream_imports_no_other_package():
    assert outside("lorastream", set()) == {}


def test_schemas_imports_only_lorastream():
    assert outside("schemas", {"lorastream"}) == {}


def test_streamer_imports_only_schemas_and_lorastream():
    assert outside("streamer", {"schemas", "lorastream"}) == {}


def test_gpu_engine_knows_nothing_of_kafka_events_or_the_applications():
    assert outside("gpu_engine", {"lorastream"}) == {}


def test_consumers_import_no_application_and_no_development_package():
    forbidden = {"cli", "land", *DEVELOPMENT}
    assert {target: where for target, where in imports_of("consumers").items() if target in forbidden} == {}


def test_nothing_outside_the_development_packages_and_tests_imports_them():
    offenders = [
        str(edge)
        for edge in edges()
        if edge.target in DEVELOPMENT
        and edge.source not in DEVELOPMENT | {"tests"}
        and not (edge.is_lazy and (edge.path, edge.target) in LAZY_DEVELOPMENT_IMPORTS)
    ]
    assert offenders == []


def test_the_cli_reaches_bench_in_one_place_only():
    into_bench = [edge for edge in edges() if edge.target == "bench" and edge.source in RUNTIME]
    assert [(e.path, e.is_lazy) for e in into_bench] == [("cli/commands.py", True)]


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of packages that import each other, directly or round a loop (sorted names)."""
    reach = {node: _reachable(graph, node) for node in graph}
    groups = {frozenset(n for n in reach if node in reach[n] and n in reach[node]) for node in reach}
    return sorted(sorted(group) for group in groups if group)


def test_the_cycle_finder_finds_every_cycle():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": {"b"}, "c": {"d"}, "d": {"c"}}) == [["b"], ["c", "d"]]
    assert import_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycle_between_packages():
    graph: dict[str, set[str]] = {}
    for edge in edges():
        if edge.source != "tests":  # the tests import everything; nothing imports them
            graph.setdefault(edge.source, set()).add(edge.target)
    report = []
    for group in import_cycles(graph):
        report.append(" <-> ".join(group) + ":")
        report += [f"  {e}" for e in edges() if e.source in group and e.target in group]
    assert not report, "\n".join(report)


def test_nothing_imports_the_tests():
    assert [str(e) for e in edges() if e.target == "tests" and e.source != "tests"] == []
