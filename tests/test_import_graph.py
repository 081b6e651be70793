"""The import graph of the project's packages points one way, with no circle.

Layers, lowest first -- a module imports its own layer and the layers below it, never one
above:

    datamodules  <  supernet (the core)  <  derive  <  benchmarks  <  supernet.app

``supernet.app`` is the app layer (the ``attnas`` command and what only commands use):
nothing outside it imports it. Every ``import`` of every module counts -- at module level,
inside a function or under ``if TYPE_CHECKING`` -- and so does the package ``__init__`` an
import runs first (importing ``a.b.c`` from outside ``a.b`` runs ``a/b/__init__.py``); the
dispatcher's table of subcommand modules (``supernet/app/cli.py``, modules named by
string) counts as imports of the app. Two more tests keep the project's own imports out of
functions, where they used to hide circles, and catch an import of a project module that
does not exist (a module moved, its relative imports left as they were).

The checker is :func:`problems`, a function of a list of edges; a self-check feeds it a
made-up graph with a circle and a back-arrow to show that it reports both.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

from repo import REPO

PACKAGES = ("datamodules", "supernet", "derive", "benchmarks")
APP = "supernet.app"
#: the layers, lowest first (a module's layer: :func:`layer_of`)
LAYERS = ("datamodules", "supernet core", "derive", "benchmarks", "app")
#: the module whose ``COMMANDS`` table names the subcommands' modules
DISPATCHER = "supernet.app.cli"


class Edge(NamedTuple):
    """``source`` imports ``target`` at ``where`` (``path:line``, and how)."""

    source: str
    target: str
    where: str
    in_function: bool = False


def layer_of(module: str) -> int:
    """The index in :data:`LAYERS` of a project module's layer."""
    if module == APP or module.startswith(APP + "."):
        return LAYERS.index("app")
    top = module.split(".")[0]
    return LAYERS.index("supernet core" if top == "supernet" else top)


# ----------------------------------------------------------------------- the real graph
def project_modules() -> dict[str, Path]:
    """Every module of :data:`PACKAGES` by dotted name (a package by its own name)."""
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is a project module (None: not the project's)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _names(node: ast.Import | ast.ImportFrom, module: str, is_package: bool,
           modules: dict[str, Path]) -> list[str]:
    """The dotted names one import statement asks for: ``import a.b`` -> ``a.b``;
    ``from .x import y`` in ``p.m`` -> ``p.x`` (and ``p.x.y`` when that is a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    return [prefix] + [f"{prefix}.{a.name}" for a in node.names
                       if f"{prefix}.{a.name}" in modules]


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool,
              modules: dict[str, Path]) -> list[str]:
    """The project modules one import statement loads, parents' ``__init__`` included."""
    out: list[str] = []
    own = set(_ancestors(module))
    for name in _names(node, module, is_package, modules):
        target = _known(name, modules)
        if target is None:
            continue
        # importing a.b.c runs a/__init__ and a/b/__init__ first, unless this module is
        # inside them (then they are already being imported)
        for step in [*_ancestors(target), target]:
            if step in modules and step not in own and step != module and step not in out:
                out.append(step)
    return out


def unresolved_imports() -> list[str]:
    """``path:line: name`` for each import of a project module that does not exist (a
    module moved without its imports: ``from .blocks import X`` left behind)."""
    modules = project_modules()
    out = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            names = _names(node, module, path.name == "__init__.py", modules)
            if isinstance(node, ast.ImportFrom):
                names = names[:1]  # ``from M import x``: x may be any name of M
            for name in names:
                if name.split(".")[0] in PACKAGES and name not in modules:
                    out.append(f"{path.relative_to(REPO)}:{node.lineno}: {name}")
    return out


def _dispatched(path: Path) -> list[tuple[str, int]]:
    """The modules the dispatcher's ``COMMANDS`` table names, with their lines."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) else None)
        if isinstance(target, ast.Name) and target.id == "COMMANDS":
            assert isinstance(node.value, ast.Dict)
            return [(value.elts[0].value, value.lineno) for value in node.value.values
                    if isinstance(value, ast.Tuple) and isinstance(value.elts[0], ast.Constant)]
    raise AssertionError(f"{path}: no COMMANDS table")


def project_edges() -> list[Edge]:
    """Every import between project modules (see the module docstring)."""
    modules = project_modules()
    edges = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        rel = path.relative_to(REPO)
        parents: dict[ast.AST, ast.AST] = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                parents[child] = node
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            up, in_function = node, False
            while up in parents:
                up = parents[up]
                in_function |= isinstance(up, (ast.FunctionDef, ast.AsyncFunctionDef))
            for target in _imported(node, module, path.name == "__init__.py", modules):
                how = ", inside a function" if in_function else ""
                edges.append(Edge(module, target, f"{rel}:{node.lineno}{how}", in_function))
    for name, line in _dispatched(modules[DISPATCHER]):
        assert name in modules, f"{DISPATCHER}: COMMANDS names {name!r}, not a module"
        edges.append(Edge(DISPATCHER, name, f"{modules[DISPATCHER].relative_to(REPO)}:{line}"
                                            f", by name in COMMANDS"))
    return edges


# ----------------------------------------------------------------------------- checker
def _cycles(edges: list[Edge]) -> list[list[Edge]]:
    """One circle of edges per strongly connected component that has one."""
    graph: dict[str, dict[str, Edge]] = defaultdict(dict)
    for e in edges:
        graph[e.source].setdefault(e.target, e)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan; the graph is a few hundred modules deep at most
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
            if len(component) > 1 or v in graph[v]:
                components.append(sorted(component))

    for v in sorted({e.source for e in edges} | {e.target for e in edges}):
        if v not in index:
            visit(v)
    circles = []
    for component in components:
        start, inside = component[0], set(component)
        # shortest way from start back to start inside the component
        paths: dict[str, list[Edge]] = {start: []}
        frontier = [start]
        found: list[Edge] | None = None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for w, e in sorted(graph[v].items()):
                    if w == start:
                        found = paths[v] + [e]
                        break
                    if w in inside and w not in paths:
                        paths[w] = paths[v] + [e]
                        nxt.append(w)
                if found is not None:
                    break
            frontier = nxt
        assert found is not None
        circles.append(found)
    return circles


def problems(edges: list[Edge]) -> tuple[list[str], list[str]]:
    """``(circles, back_arrows)``: one readable line per import circle and per import
    that points up the layers (or into the app from outside it)."""
    circles = [" -> ".join([c[0].source] + [f"{e.target} ({e.where})" for e in c])
               for c in _cycles(edges)]
    back = []
    for e in edges:
        src, dst = layer_of(e.source), layer_of(e.target)
        if dst > src:
            back.append(f"{e.where}: {e.source} ({LAYERS[src]}) imports {e.target} "
                        f"({LAYERS[dst]}), a layer above it")
    return circles, sorted(set(back))


_ORDER = " < ".join(LAYERS)


# ------------------------------------------------------------------------------- tests
def test_the_project_has_no_import_circle() -> None:
    edges = project_edges()
    assert len(project_modules()) > 100 and len(edges) > 300  # the walk saw the packages
    circles, _ = problems(edges)
    assert not circles, "import circles (each module imports the next):\n" + "\n".join(circles)


def test_every_import_points_down_the_layers() -> None:
    edges = project_edges()
    _, back = problems(edges)
    assert not back, (f"imports up the layers ({_ORDER}; nothing outside "
                      f"{APP} imports it):\n" + "\n".join(back))
    # the walk sees what it must: the app reaches benchmarks through the dispatcher only
    assert any(e.source == DISPATCHER and e.target == "benchmarks.run" for e in edges)


def test_no_project_import_inside_a_function() -> None:
    """An import inside a function is how a circle hides; the project's own modules are
    imported at module level (third-party ones may be lazy: ray, matplotlib, onnxruntime)."""
    inside = sorted({f"{e.where}: {e.target}" for e in project_edges() if e.in_function})
    assert not inside, "project modules imported inside functions:\n" + "\n".join(inside)


def test_every_project_import_names_a_module() -> None:
    missing = unresolved_imports()
    assert not missing, "imports of project modules that do not exist:\n" + "\n".join(missing)


def test_the_checker_reports_a_circle_and_a_back_arrow() -> None:
    edges = [
        Edge("supernet.a", "supernet.b", "supernet/a.py:1"),
        Edge("supernet.b", "supernet.c", "supernet/b.py:1", True),
        Edge("supernet.c", "supernet.a", "supernet/c.py:1"),  # a -> b -> c -> a
        Edge("supernet.c", "datamodules.x", "supernet/c.py:2"),  # down: fine
        Edge("derive.d", "supernet.a", "derive/d.py:1"),  # down: fine
        Edge("supernet.b", "derive.e", "supernet/b.py:2"),  # up: core -> derive
        Edge("benchmarks.f", "supernet.app.cli", "benchmarks/f.py:1"),  # into the app
        Edge("supernet.app.cli", "benchmarks.g", "supernet/app/cli.py:1"),  # app: down
    ]
    circles, back = problems(edges)
    assert circles == ["supernet.a -> supernet.b (supernet/a.py:1) -> supernet.c "
                       "(supernet/b.py:1) -> supernet.a (supernet/c.py:1)"], circles
    assert back == [
        "benchmarks/f.py:1: benchmarks.f (benchmarks) imports supernet.app.cli (app), "
        "a layer above it",
        "supernet/b.py:2: supernet.b (supernet core) imports derive.e (derive), "
        "a layer above it",
    ]
    # without those three edges the graph passes
    bad = ("supernet/c.py:1", "supernet/b.py:2", "benchmarks/f.py:1")
    assert problems([e for e in edges if e.where not in bad]) == ([], [])


def test_an_import_loads_the_packages_above_its_module() -> None:
    """``from .sub.m import y`` in ``pkg.x`` loads ``pkg.sub`` (its ``__init__``) and
    ``pkg.sub.m``; ``pkg`` itself is already loading (``pkg.x`` is inside it)."""
    modules = dict.fromkeys(("pkg", "pkg.sub", "pkg.sub.m", "pkg.x", "pkg.sub.n"), Path())
    node = ast.parse("from .sub.m import y").body[0]
    assert _imported(node, "pkg.x", False, modules) == ["pkg.sub", "pkg.sub.m"]
    node = ast.parse("from . import m, z").body[0]  # a submodule and a name
    assert _imported(node, "pkg.sub.n", False, modules) == ["pkg.sub.m"]
    node = ast.parse("import pkg.sub.m, numpy").body[0]
    assert _imported(node, "other", False, {**modules, "other": Path()}) == [
        "pkg", "pkg.sub", "pkg.sub.m"]
