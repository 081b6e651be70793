"""What every picture of :mod:`derive` shares: the atomic save and the family colours.

Pictures are drawn with matplotlib alone (Agg canvas, no pyplot state, no Graphviz) and
written atomically: the figure goes to a temporary file in the target folder which then
replaces the target with :func:`os.replace`, so a reader never sees half a picture.
"""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from datamodules.atomic import atomic_path

__all__ = ["FAMILY_COLOURS", "FAMILY_LABELS", "DPI", "save_figure"]

#: Fill / edge colour of a node box (and of anything else coloured by family).
FAMILY_COLOURS: dict[str, tuple[str, str]] = {
    "map": ("#fbd9b0", "#c46a1b"),
    "dot": ("#c6dcf2", "#2a64a0"),
}
FAMILY_LABELS: dict[str, str] = {"map": "map-based attention", "dot": "dot-product attention"}
#: Resolution of every raster picture.
DPI = 150


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = DPI) -> Path:
    """Save ``fig`` to ``path`` atomically (the format comes from the suffix, png if none).

    Raises:
        ValueError: a suffix matplotlib cannot write (nothing is written then).
    """
    path = Path(path)
    canvas = FigureCanvasAgg(fig)
    suffix = path.suffix.lower().lstrip(".")
    supported = canvas.get_supported_filetypes()
    if suffix and suffix not in supported:
        raise ValueError(
            f"{path}: cannot write a .{suffix} picture (supported: {', '.join(sorted(supported))})"
        )
    fmt = suffix or "png"
    with atomic_path(path) as tmp:
        # The temp name has no picture suffix, so the format must be given explicitly.
        fig.savefig(tmp, format=fmt, dpi=dpi, facecolor="white")
    return path
