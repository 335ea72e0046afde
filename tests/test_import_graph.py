"""raysys's modules import each other without a circle, and the bottom layers import nothing
above them.

The graph is read from the source with ``ast``: every ``import`` / ``from ... import`` of a
raysys module anywhere in a file (module level, inside functions, under ``TYPE_CHECKING``) and
``importlib.import_module("raysys...")`` with a literal name is an edge. A lazy import inside a
function still ties the two modules together (the config layer calling up into models and data
was such a circle), so it counts. Importing one's own parent package is not an edge: Python
has always imported it first.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "raysys"


def module_files(package: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package."""
    out = {}
    for p in sorted(package.rglob("*.py")):
        parts = list(p.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _target(name: str, modules: dict[str, Path]) -> str | None:
    """The module an import of ``name`` loads last: ``name`` itself, else its longest prefix
    that is a module (``raysys.config.from_dict`` -> ``raysys.config``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, source: str, modules: dict[str, Path]) -> set[str]:
    """The raysys modules ``module``'s source imports (see the module docstring)."""
    is_package = modules[module].name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:                          # relative: from its package
                pkg = module.split(".") if is_package else module.split(".")[:-1]
                pkg = pkg[:len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            # `from raysys.data import io` imports the submodule; `from raysys.config import X`
            # the module
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                     for a in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module" \
                and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            names = [node.args[0].value]
        for name in names:
            if name.split(".")[0] != "raysys":
                continue
            target = _target(name, modules)
            if target and target != module and not module.startswith(target + "."):
                found.add(target)
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    modules = module_files(package)
    return {m: imports_of(m, p.read_text(), modules) for m, p in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm,
    iterative), each as one concrete circle ``a -> b -> ... -> a`` for the failure message."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in graph:
                    continue
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        components.append(sorted(comp))
    return [_one_circle(graph, set(c)) for c in components]


def _one_circle(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A shortest circle through the first module of ``comp`` (breadth-first inside it)."""
    start = min(comp)
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & comp):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return sorted(comp)


# -- the detector itself, on hand-made graphs ----------------------------------------------------


def test_cycles_finds_each_circle_and_nothing_else() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"f"}, "f": {"e"},
             "g": {"d"}}
    assert sorted(cycles(graph)) == [["a", "b", "c", "a"], ["e", "f", "e"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_every_kind_of_import_is_an_edge(tmp_path: Path) -> None:
    pkg = tmp_path / "raysys"
    (pkg / "data").mkdir(parents=True)
    for f in ("__init__.py", "config.py", "errors.py", "data/__init__.py", "data/io.py",
              "data/sources.py"):
        (pkg / f).write_text("")
    (pkg / "config.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from raysys.errors import E\n"
        "if TYPE_CHECKING:\n    from raysys.data import io\n"
        "def f():\n    import raysys.data.sources as s\n"
        "    import importlib\n    importlib.import_module('raysys.data')\n")
    (pkg / "data" / "io.py").write_text("from . import sources\nfrom ..config import x\n"
                                        "import raysys.data\n")
    graph = import_graph(pkg)
    assert graph["raysys.config"] == {"raysys.errors", "raysys.data.io", "raysys.data.sources",
                                      "raysys.data"}
    # relative imports resolve; the module's own parent package is not an edge
    assert graph["raysys.data.io"] == {"raysys.data.sources", "raysys.config"}
    assert cycles(graph) == [["raysys.config", "raysys.data.io", "raysys.config"]]


# -- raysys --------------------------------------------------------------------------------------


def test_raysys_imports_form_no_circle() -> None:
    graph = import_graph()
    assert len(graph) > 100 and "raysys.errors" in graph
    found = cycles(graph)
    assert found == [], "import circles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_bottom_layers_import_nothing_above_them() -> None:
    """``raysys.errors`` imports nothing from raysys; the config layer only errors and its own
    machinery (what needs models, data, the cluster or an engine is the preflight's); the
    training config and the modules that take one point one way only."""
    graph = import_graph()
    assert graph["raysys.errors"] == set()
    assert graph["raysys.config_dataclass"] == {"raysys.errors"}
    # engines.base: the one derived type (SamplingConfig.params), a module that imports nothing
    assert graph["raysys.config"] <= {"raysys.errors", "raysys.config_dataclass",
                                      "raysys.engines.base"}
    assert graph["raysys.engines.base"] == set()
    # TrainConfig checks kind names against the kinds registry, so the registry and the model
    # setup it calls never import it (not even for type hints); trackers take a TrainConfig, so
    # TrainConfig names the trackers itself
    assert "raysys.training.trackers" not in graph["raysys.training.config"]
    for above in ("raysys.training.kinds", "raysys.training.model_setup"):
        assert "raysys.training.config" not in graph[above], above


@pytest.mark.parametrize("module, allowed", [
    ("raysys.errors", {"raysys", "raysys.errors"}),
    ("raysys.config", {"raysys", "raysys.config", "raysys.config_dataclass", "raysys.errors"}),
])
def test_importing_a_bottom_module_alone_loads_nothing_else(module: str, allowed: set[str]) -> None:
    """In a fresh interpreter: importing it first loads no other raysys module."""
    code = (f"import sys, {module}\n"
            "print(sorted(m for m in sys.modules if m == 'raysys' or m.startswith('raysys.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert set(eval(out)) == allowed      # noqa: S307 - a list literal this test printed
