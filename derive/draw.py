"""The picture of a derived cell: :func:`draw_cell` draws a genotype as a small graph.

The architecture CSV and the picture of the architecture weights live in
:mod:`derive.arch_record` and :mod:`derive.arch_plot`, the picture of a selection's
decisions in :mod:`derive.selection_plot`; their public functions are re-exported here
(``from derive.draw import plot_alpha, write_arch_csv_row, ...`` keeps working).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyBboxPatch, Rectangle

from supernet.space import FAMILIES, parse_op

from .arch_plot import plot_alpha
from .arch_record import arch_csv_header, read_arch_csv, write_arch_csv_row
from .genotype import Genotype
from .picture import FAMILY_COLOURS
from .picture import FAMILY_LABELS as _FAMILY_LABELS
from .picture import save_figure as _save
from .selection_plot import plot_selection

__all__ = [
    "draw_cell",
    "plot_alpha",
    "plot_selection",
    "write_arch_csv_row",
    "read_arch_csv",
    "arch_csv_header",
]

_GREY = ("#eeeeee", "#666666")
_SINK = ("#dfe9d5", "#4f7a34")
_EDGE = "#333333"
_CONCAT_EDGE = "#8a8a8a"


# --------------------------------------------------------------------------- the cell


def _depths(genotype: Genotype) -> list[int]:
    """Depth of each node: 1 for nodes reading the cell input, parent depth + 1 otherwise."""
    depth: list[int] = []
    for nd in genotype.nodes:
        depth.append(1 if nd.input == 0 else depth[nd.input - 1] + 1)
    return depth


def _ratio_label(ratio: float) -> str:
    for den in (2, 3, 4, 8):
        if math.isclose(ratio * den, 1.0):
            return f"C/{den}"
    return "C" if math.isclose(ratio, 1.0) else f"{ratio:g}·C"


def draw_cell(genotype: Genotype, path: str | os.PathLike, title: str | None = None) -> Path:
    """Draw ``genotype`` as a small graph and write it to ``path`` (png/pdf/svg by suffix).

    Layout, left to right: the cell input ``x``, the 1x1x1 projection, the nodes in
    columns by depth (one row per node, boxes coloured by family and labelled with
    family, dimension and activation; an arrow from each node's input), a concat bar that
    every node feeds, the 1x1x1 conv + BN of the sink, the residual addition with ``x``
    and the output.

    Args:
        genotype: the cell to draw.
        path: the picture file; written atomically.
        title: the title above the picture; by default built from the provenance.

    Returns:
        The path written.
    """
    if not isinstance(genotype, Genotype):
        raise TypeError(f"draw_cell needs a Genotype, got {type(genotype).__name__}")
    K = genotype.num_nodes
    depth = _depths(genotype)
    max_depth = max(depth)

    # Geometry in inches (one data unit = one inch before scaling).
    node_w, node_h, row_pitch, gap = 1.75, 0.78, 1.02, 0.62
    x_w, proj_w, sink_w, out_w, bar_w, plus_r = 1.15, 1.3, 1.45, 1.15, 0.3, 0.19
    margin, top, bottom = 0.3, 0.75, 1.2

    cx_in = margin + x_w / 2
    cx_proj = cx_in + x_w / 2 + gap + proj_w / 2
    col0 = cx_proj + proj_w / 2 + gap + node_w / 2
    col_x = [col0 + (d - 1) * (node_w + gap) for d in range(1, max_depth + 1)]
    bar_x = col_x[-1] + node_w / 2 + gap * 0.8 + bar_w / 2
    cx_sink = bar_x + bar_w / 2 + gap * 0.8 + sink_w / 2
    if K == 1:  # no concat bar
        cx_sink = col_x[-1] + node_w / 2 + gap + sink_w / 2
    cx_plus = cx_sink + sink_w / 2 + gap * 0.8 + plus_r
    cx_out = cx_plus + plus_r + gap * 0.8 + out_w / 2
    width = cx_out + out_w / 2 + margin

    row_y = [-k * row_pitch for k in range(K)]
    y_mid = (row_y[0] + row_y[-1]) / 2
    y_res = row_y[-1] - node_h / 2 - 0.42
    y_top = row_y[0] + node_h / 2 + top
    y_bot = y_res - bottom
    height = y_top - y_bot

    scale = min(1.0, 20.0 / width, 14.0 / height)
    fig = Figure(figsize=(width * scale, height * scale))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(y_bot, y_top)
    ax.axis("off")
    fs = 9.0 * scale

    def box(cx: float, cy: float, w: float, h: float, text: str, colours: tuple[str, str],
            size: float = fs, weight: str = "normal") -> None:
        ax.add_patch(FancyBboxPatch(
            (cx - w / 2, cy - h / 2), w, h, boxstyle="round,pad=0,rounding_size=0.09",
            facecolor=colours[0], edgecolor=colours[1], linewidth=1.3 * scale, zorder=3,
        ))
        ax.text(cx, cy, text, ha="center", va="center", fontsize=size, zorder=4,
                fontweight=weight, linespacing=1.25)

    def arrow(start: tuple[float, float], end: tuple[float, float], colour: str = _EDGE,
              lw: float = 1.2, style: str = "-|>", rad: float = 0.0) -> None:
        ax.annotate(
            "", xy=end, xytext=start, zorder=2,
            arrowprops={"arrowstyle": style, "color": colour, "lw": lw * scale,
                        "shrinkA": 0, "shrinkB": 0, "mutation_scale": 11 * scale,
                        "connectionstyle": f"arc3,rad={rad}"},
        )

    # Input and projection.
    box(cx_in, y_mid, x_w, node_h, "x\n(N, C, T, H, W)", _GREY)
    box(cx_proj, y_mid, proj_w, node_h,
        f"proj  h₀\n1×1×1 conv\nC → {_ratio_label(genotype.inner_ratio)}", _GREY)
    arrow((cx_in + x_w / 2, y_mid), (cx_proj - proj_w / 2, y_mid))

    # Nodes, their input edges, and their edges into the concat bar.
    for k, nd in enumerate(genotype.nodes):
        spec = parse_op(nd.op)
        cx, cy = col_x[depth[k] - 1], row_y[k]
        extra = ""
        if spec.family == "dot" and genotype.position != "none":
            extra = f" + {genotype.position}"
        box(cx, cy, node_w, node_h, "", FAMILY_COLOURS[spec.family])
        ax.text(cx, cy + 0.2, f"node {k} · {spec.family}{extra}", ha="center", va="center",
                fontsize=fs, fontweight="bold", zorder=4)
        ax.text(cx, cy - 0.02, spec.dimension, ha="center", va="center", fontsize=fs, zorder=4)
        ax.text(cx, cy - 0.22, spec.activation, ha="center", va="center", fontsize=fs,
                style="italic", zorder=4)
        if nd.input == 0:
            arrow((cx_proj + proj_w / 2, y_mid), (cx - node_w / 2, cy))
        else:
            parent = nd.input - 1
            px, py = col_x[depth[parent] - 1], row_y[parent]
            arrow((px + node_w / 2, py - node_h * 0.25), (cx - node_w / 2, cy))
        if K > 1:
            arrow((cx + node_w / 2, cy), (bar_x - bar_w / 2, cy), colour=_CONCAT_EDGE, lw=1.0)
        else:  # a single node feeds the sink conv directly
            arrow((cx + node_w / 2, cy), (cx_sink - sink_w / 2, cy))

    # Sink: concat bar (K > 1), 1x1x1 conv + BN, residual addition, output.
    if K > 1:
        bar_top, bar_bot = row_y[0] + node_h / 2, row_y[-1] - node_h / 2
        ax.add_patch(Rectangle((bar_x - bar_w / 2, bar_bot), bar_w, bar_top - bar_bot,
                               facecolor=_SINK[0], edgecolor=_SINK[1], lw=1.3 * scale,
                               zorder=3))
        ax.text(bar_x, (bar_top + bar_bot) / 2, "concat", rotation=90, ha="center",
                va="center", fontsize=fs, zorder=4)
        arrow((bar_x + bar_w / 2, y_mid), (cx_sink - sink_w / 2, y_mid))
    box(cx_sink, y_mid, sink_w, node_h,
        f"1×1×1 conv\n{K}·Ci → C\nBN (γ₀ = 0)" if K > 1 else "1×1×1 conv\nCi → C\nBN (γ₀ = 0)",
        _SINK)
    ax.add_patch(Circle((cx_plus, y_mid), plus_r, facecolor="white", edgecolor=_EDGE,
                        lw=1.3 * scale, zorder=3))
    ax.text(cx_plus, y_mid, "+", ha="center", va="center_baseline", fontsize=fs * 1.6,
            zorder=4)
    arrow((cx_sink + sink_w / 2, y_mid), (cx_plus - plus_r, y_mid))
    box(cx_out, y_mid, out_w, node_h, "out\n(N, C, T, H, W)", _GREY)
    arrow((cx_plus + plus_r, y_mid), (cx_out - out_w / 2, y_mid))

    # Residual: down from x, along the bottom, up into the addition.
    ax.plot([cx_in, cx_in, cx_plus], [y_mid - node_h / 2, y_res, y_res], color=_EDGE,
            lw=1.2 * scale, zorder=2, solid_capstyle="butt")
    arrow((cx_plus, y_res), (cx_plus, y_mid - plus_r))
    ax.text((cx_in + cx_plus) / 2, y_res + 0.06, "residual (identity)", ha="center",
            va="bottom", fontsize=fs * 0.9, color="#555555", zorder=4)

    # Title, legend and the cell's hyper-parameters.
    if title is None:
        title = "attnas cell"
        prov = genotype.provenance
        bits = [f"{key} {prov[key]}" for key in ("run", "epoch")
                if key in prov and isinstance(prov[key], (str, int, float))]
        if prov.get("kind") == "random":
            bits.insert(0, f"random (seed {prov.get('seed')})")
        if bits:
            title += " — " + ", ".join(bits)
    ax.text(margin, y_top - 0.18, title, ha="left", va="top", fontsize=fs * 1.3,
            fontweight="bold")
    lx = margin
    for fam in FAMILIES:
        ax.add_patch(Rectangle((lx, y_bot + 0.58), 0.26, 0.17, facecolor=FAMILY_COLOURS[fam][0],
                               edgecolor=FAMILY_COLOURS[fam][1], lw=scale, zorder=3))
        ax.text(lx + 0.36, y_bot + 0.665, _FAMILY_LABELS[fam], ha="left", va="center",
                fontsize=fs * 0.9)
        lx += 2.15
    pool = "max-pooled 1×2×2" if genotype.kv_pool else "not pooled"
    footer = (f"K = {K} node{'s' if K != 1 else ''} · inner width Ci = "
              f"{_ratio_label(genotype.inner_ratio)} · dot-product keys/values {pool} · "
              f"position: {genotype.position}")
    ax.text(margin, y_bot + 0.22, footer, ha="left", va="bottom", fontsize=fs * 0.9,
            color="#444444")
    return _save(fig, path)
