"""What the runtime imports: never the benchmarks, and its modules without cycles.

The benchmarks are the separate distribution streamer-bench (bench/): `streamer bench` is the only
place that imports them, and only when that command runs. The cycle checks read the source with
`ast` (nothing is imported), so they see every module, including ones whose dependencies are
optional: the graph at import time (module-level imports) and the whole dependency graph
(function-level imports too), each without `if TYPE_CHECKING:` blocks, which never run.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

import streamer
import streamer_bench

BENCH_ONLY = ("streamer_bench", "jiwer")
PACKAGES = {
    "streamer": Path(streamer.__file__).resolve().parent,
    "streamer_bench": Path(streamer_bench.__file__).resolve().parent,
}


@pytest.mark.parametrize(
    "code",
    [
        "import streamer.daemon",
        "import streamer.cli",
        # Building the parser (what `streamer run` and `streamer --help` do) must not load them either.
        "from streamer.cli import build_parser; build_parser()",
    ],
)
def test_the_runtime_imports_no_benchmark_module(code: str) -> None:
    probe = f"{code}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    loaded = res.stdout.split()
    assert "streamer.cli" in loaded or "streamer.daemon" in loaded
    assert [m for m in loaded if m.split(".")[0] in BENCH_ONLY] == []


def _module_files() -> dict[str, Path]:
    files: dict[str, Path] = {}
    for package, root in PACKAGES.items():
        for f in root.rglob("*.py"):
            parts = [package, *f.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join(parts)] = f
    return files


# Bodies that run when the statement does (a class body at import time), and bodies that run later.
RUN_IN_PLACE = (ast.With, ast.ClassDef, ast.For, ast.While)
RUN_LATER = (ast.FunctionDef, ast.AsyncFunctionDef, ast.AsyncWith, ast.AsyncFor)


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(body: Sequence[ast.stmt], nested: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements that run at import time (nested=False) or at any time (nested=True)."""
    for s in body:
        if isinstance(s, ast.Import | ast.ImportFrom):
            yield s
        elif isinstance(s, ast.If):
            if not _type_checking(s.test):
                yield from _imports(s.body, nested)
            yield from _imports(s.orelse, nested)
        elif isinstance(s, ast.Try):
            for block in (s.body, s.orelse, s.finalbody, *(h.body for h in s.handlers)):
                yield from _imports(block, nested)
        elif isinstance(s, RUN_IN_PLACE) or (nested and isinstance(s, RUN_LATER)):
            yield from _imports(s.body, nested)
            yield from _imports(getattr(s, "orelse", []), nested)


def import_graph(nested: bool) -> dict[str, set[str]]:
    """Module -> the project modules it imports.

    `from a.b import c` is an edge to a.b.c when that is a module, else to a.b. The package
    `__init__` Python runs before any of its submodules is not an edge: that order is Python's, not
    a dependency on what the package defines (which an explicit `from a import X` does record).
    """
    files = _module_files()
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in _imports(ast.parse(path.read_text()).body, nested):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for target in targets:
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_the_graph_sees_the_modules_and_their_imports() -> None:
    graph = import_graph(nested=True)
    assert "streamer.daemon" in graph and "streamer_bench.report" in graph
    assert "streamer.config" in graph["streamer.daemon"]
    assert "streamer_bench.cli" in graph["streamer.cli"]  # the one lazy import of the benchmarks


def test_cycles_are_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert cycles(graph) == [["a", "b", "c"]]


@pytest.mark.parametrize("nested", [False, True], ids=["import-time", "with-function-level-imports"])
def test_no_import_cycles(nested: bool) -> None:
    assert cycles(import_graph(nested)) == []


def test_only_the_cli_imports_the_benchmarks() -> None:
    graph = import_graph(nested=True)
    importers = {
        m
        for m, edges in graph.items()
        if m.startswith("streamer.") and any(e.startswith("streamer_bench") for e in edges)
    }
    assert importers == {"streamer.cli"}
