"""Small helpers shared by the benchmark scripts."""

from __future__ import annotations

import math
import platform
from pathlib import Path
from typing import Any

from rich.markup import escape as _rich_escape

from datamodules.atomic import atomic_path

#: the repository's root folder (benchmarks/ lies in it)
REPO = Path(__file__).resolve().parents[1]


def finite_float(value: Any) -> float | None:
    """``float(value)`` if that is a finite number (CSV cells are strings), else None."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def fmt_seconds(seconds: float | None) -> str:
    """A duration as the progress lines and reports write it (``42 s``, ``3 min 05 s``,
    ``2 h 07 min``; ``?`` when unknown)."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def escape(text: str) -> str:
    """``text`` with rich markup escaped (labels, paths and errors hold brackets)."""
    return _rich_escape(str(text))


def node_source(index: int) -> str:
    """A node's input as written in the tables: ``in`` (the projected cell input) or
    ``nK`` (node K)."""
    return "in" if index == 0 else f"n{index - 1}"


def one_line(err: BaseException) -> str:
    """``Type: first line of the message`` (what a failed row records)."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}"[:300] if text else type(err).__name__


def cpu_name(fallback: str | None = None) -> str:
    """The CPU model from /proc/cpuinfo (else ``platform.processor()``, else ``fallback``,
    else the architecture name)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or fallback or platform.machine()


def save_figure_atomic(fig: Any, path: str | Path, dpi: int) -> Path:
    """Save a matplotlib figure to ``path`` via a temp file + rename, then close it."""
    import matplotlib.pyplot as plt

    out = Path(path)
    with atomic_path(out, suffix=f".tmp{out.suffix}") as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    return out


RunKey = tuple[str, str, int, str]


def read_runs(path: Path) -> dict[RunKey, dict[str, str]]:
    """A resumable benchmark's CSV keyed by ``(row, block, seed, settings)`` (empty when the
    file does not exist yet); a later line for the same key wins."""
    import csv

    if not path.is_file():
        return {}
    with path.open() as f:
        return {(r["row"], r["block"], int(r["seed"]), r["settings"]): r
                for r in csv.DictReader(f)}


def append_run(path: Path, fields: list[str], rec: dict[str, Any]) -> None:
    """Append one record to a benchmark CSV (header first if new), flushed and fsynced so a
    killed benchmark keeps every finished row."""
    import csv
    import os

    new = not path.is_file()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        if new:
            w.writeheader()
        w.writerow({k: rec.get(k, "") for k in fields})
        f.flush()
        os.fsync(f.fileno())
