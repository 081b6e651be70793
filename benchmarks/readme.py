"""Refresh the benchmark page's round-2 section from ``benchmarks/results/accuracy.md``.

    python -m benchmarks.readme [--readme docs/benchmarks.md]
                                [--accuracy benchmarks/results/accuracy.md]

``docs/benchmarks.md`` (README's benchmark section until the README was cut to a newcomer's
page) keeps a hand-written section between ``<!-- round2-results:start -->`` and
``<!-- round2-results:end -->`` with prose around the benchmark's tables. This replaces, in
that section only, every table row whose first cell names a row of ``accuracy.md`` (rows
``accuracy.md`` marks "not run" are left alone, as are header and separator rows), and the
target lines after ``Default group:`` with ``accuracy.md``'s ``## Targets`` lines; rows and
prose that ``accuracy.md`` does not have are kept. New rows (a new group) are added by hand
where the prose around them belongs. Written atomically; prints how many rows changed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.common import REPO
from datamodules.atomic import atomic_write_text

START, END = "<!-- round2-results:start -->", "<!-- round2-results:end -->"
#: first cells of header rows (never replaced)
HEADERS = ("block", "search group", "retrain budget", "budget", "cell", "row")

__all__ = ["refresh", "main"]


def _rows(md: list[str]) -> dict[str, str]:
    rows: dict[str, str] = {}
    for line in md:
        if line.startswith("| ") and not line.startswith("|---") and "not run" not in line:
            rows.setdefault(line.split("|")[1].strip(), line)
    return rows


def refresh(readme: str, accuracy_md: str) -> tuple[str, int]:
    """README text with its benchmark section refreshed from ``accuracy_md``; and the
    number of rows replaced.

    Raises:
        ValueError: README has no marked section, or ``accuracy_md`` no ``## Targets``.
    """
    if START not in readme or END not in readme:
        raise ValueError(f"README has no {START} ... {END} section")
    md = accuracy_md.splitlines()
    if "## Targets" not in md:
        raise ValueError("accuracy.md has no '## Targets' section")
    start, end = readme.index(START), readme.index(END)
    rows = _rows(md)
    out, changed = [], 0
    for line in readme[start:end].splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            key = line.split("|")[1].strip()
            if key in rows and key not in HEADERS and rows[key] != line:
                out.append(rows[key])
                changed += 1
                continue
        out.append(line)
    text = "\n".join(out)
    t0 = md.index("## Targets")
    stop = md.index("## Search groups") if "## Search groups" in md else len(md)
    targets = [ln for ln in md[t0 + 1:stop] if ln.strip() and not ln.startswith("#")]
    if "Default group: `" in text and targets:
        i = text.index("Default group: `")
        j = text.find("\n\n", i)
        j = len(text) if j < 0 else j
        text = text[:i] + "\n".join(targets) + text[j:]
    return readme[:start] + text.rstrip("\n") + "\n" + readme[end:], changed


def main(argv: list[str] | None = None) -> int:
    """Refresh the page in place; bad input: one line, exit 2."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.readme",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--readme", default=str(REPO / "docs" / "benchmarks.md"),
                   help="the page with the marked section (default: docs/benchmarks.md)")
    p.add_argument("--accuracy", default=str(REPO / "benchmarks" / "results" / "accuracy.md"))
    args = p.parse_args(argv)
    try:
        readme = Path(args.readme).read_text()
        text, changed = refresh(readme, Path(args.accuracy).read_text())
    except (OSError, ValueError) as err:
        print(f"benchmarks.readme: error: {err}", file=sys.stderr)
        return 2
    if text != readme:
        atomic_write_text(args.readme, text)
    print(f"{args.readme}: {changed} row(s) refreshed")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
