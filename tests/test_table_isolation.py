"""The search never reads the table: no module of the search's packages imports
``benchmarks`` (the table and the studies live there, above the search)."""

from __future__ import annotations

import ast
from pathlib import Path

from repo import REPO

#: the command dispatcher names subcommands by module string; it imports none of them
DISPATCHER = REPO / "supernet" / "app" / "cli.py"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_the_search_packages_never_import_the_benchmarks() -> None:
    offenders, seen = [], 0
    for package in ("datamodules", "supernet", "derive"):
        for path in sorted((REPO / package).rglob("*.py")):
            if path == DISPATCHER:
                continue
            seen += 1
            bad = sorted(m for m in _imports(path) if m.split(".")[0] == "benchmarks")
            if bad:
                offenders.append(f"{path.relative_to(REPO)}: {', '.join(bad)}")
    assert not offenders, offenders
    assert seen > 50 and DISPATCHER.is_file()
    # the check sees absolute imports: the table's own modules import the search's
    assert "supernet.factory" in _imports(REPO / "benchmarks" / "table" / "protocol.py")
