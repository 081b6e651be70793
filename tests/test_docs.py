"""README is a newcomer's page and every relative link of README and docs/ resolves.

The strict mkdocs build (``make test``, ``mkdocs.yml``) checks links and anchors too; these
checks need no mkdocs, and the build is run here as well when mkdocs is installed."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
from repo import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _pending() -> set[Path]:
    """Result pages a running build writes later (the mkdocs hook's placeholders)."""
    spec = importlib.util.spec_from_file_location("_hooks", REPO / "docs" / "mkdocs_hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    return {(REPO / uri).resolve() for uri in hooks.PENDING}


def _links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code blocks hold no links
    text = re.sub(r"`[^`\n]*`", "", text)
    return [m.group(1) for m in LINK.finditer(text)]


def test_readme_is_short_and_starts_with_the_commands_and_your_own_data() -> None:
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    first_screen = "\n".join(lines[:50])
    for needed in ("make demo", "make test", "## Search your own dataset",
                   "attnas search fit -c configs/search/ucf101_proxy.yaml --data.root"):
        assert needed in first_screen, needed
    assert "docs/your-own-data.md" in first_screen
    text = "\n".join(lines)
    for needed in ("docs/table.md", "benchmarks/results/table/README.md", "attnas table query",
                   "attnas table leaderboard", "attnas table score-supernet", ".png)",
                   "docs/design.md", "docs/troubleshooting.md", "bimodal 3-epoch retrain"):
        assert needed in text, needed


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_live_status_prose(page: Path) -> None:
    assert "running since" not in page.read_text().lower()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    pending = _pending()
    missing = []
    for link in _links(page):
        if re.match(r"[a-z]+:", link) or link.startswith("#"):
            continue
        target = (page.parent / link.split("#")[0]).resolve()
        if not target.exists() and target not in pending:
            missing.append(link)
    assert not missing, f"{page.name}: {missing}"


def test_the_marked_benchmark_section_is_in_docs_benchmarks() -> None:
    from benchmarks.readme import END, START

    text = (REPO / "docs" / "benchmarks.md").read_text()
    assert text.count(START) == 1 and text.count(END) == 1 and text.index(START) < text.index(END)


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs not installed")
def test_the_docs_build_strictly(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d",
                          str(tmp_path / "site")], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "docs" / "design" / "index.html").is_file()
