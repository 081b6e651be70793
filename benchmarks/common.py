"""Small helpers shared by the benchmark scripts."""

from __future__ import annotations

import math
import platform
from pathlib import Path
from typing import Any


def finite_float(value: Any) -> float | None:
    """``float(value)`` if that is a finite number (CSV cells are strings), else None."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (falls back to the architecture name)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` via a temp file + rename (parents created)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(out)
    return out


def save_figure_atomic(fig: Any, path: str | Path, dpi: int) -> Path:
    """Save a matplotlib figure to ``path`` via a temp file + rename, then close it."""
    import os

    import matplotlib.pyplot as plt

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp{out.suffix}")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    tmp.replace(out)
    return out
