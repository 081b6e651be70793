"""Pictures of a search: the derived cell as a graph, and the architecture weights.

Everything is drawn with matplotlib alone (Agg canvas, no pyplot state, no Graphviz) and
written atomically: the figure goes to a temporary file in the target folder which then
replaces the target with :func:`os.replace`, so a reader never sees half a picture.

The **architecture CSV** that a search logs once per epoch (see :func:`write_arch_csv_row`)
has one row per epoch and the columns::

    epoch,
    alpha.<node>.<op_name>   for node in 0..K-1, op_name in supernet.space.OP_NAMES order,
    beta.<node>.<input>      for node in 0..K-1, input in 0..node

holding ``softmax(alpha / tau)`` (each node's 24 values sum to 1) and ``softmax(beta)``
over the inputs node ``k`` may read (``0`` = projected cell input, ``j`` = node ``j - 1``).
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyBboxPatch, Rectangle
from matplotlib.ticker import MaxNLocator

from supernet.space import FAMILIES, NUM_OPS, OP_NAMES, parse_op

from .genotype import FILE_MODE, Genotype, atomic_write_text

__all__ = [
    "draw_cell",
    "plot_alpha",
    "write_arch_csv_row",
    "read_arch_csv",
    "arch_csv_header",
]

#: Fill / edge colour of a node box per family.
FAMILY_COLOURS: dict[str, tuple[str, str]] = {
    "map": ("#fbd9b0", "#c46a1b"),
    "dot": ("#c6dcf2", "#2a64a0"),
}
_FAMILY_LABELS = {"map": "map-based attention", "dot": "dot-product attention"}
_GREY = ("#eeeeee", "#666666")
_SINK = ("#dfe9d5", "#4f7a34")
_EDGE = "#333333"
_CONCAT_EDGE = "#8a8a8a"
_DPI = 150


# --------------------------------------------------------------------------- saving


def _save(fig: Figure, path: str | os.PathLike, dpi: int = _DPI) -> Path:
    """Save ``fig`` to ``path`` atomically (the format comes from the suffix, png if none)."""
    path = Path(path)
    canvas = FigureCanvasAgg(fig)
    suffix = path.suffix.lower().lstrip(".")
    supported = canvas.get_supported_filetypes()
    if suffix and suffix not in supported:
        raise ValueError(
            f"{path}: cannot write a .{suffix} picture (supported: {', '.join(sorted(supported))})"
        )
    fmt = suffix or "png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, FILE_MODE)
        # The temp name has no picture suffix, so the format must be given explicitly.
        fig.savefig(tmp, format=fmt, dpi=dpi, facecolor="white")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


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


# --------------------------------------------------------------------------- arch CSV


def arch_csv_header(num_nodes: int) -> list[str]:
    """Column names of the architecture CSV for ``num_nodes`` nodes."""
    cols = ["epoch"]
    cols += [f"alpha.{k}.{op}" for k in range(num_nodes) for op in OP_NAMES]
    cols += [f"beta.{k}.{j}" for k in range(num_nodes) for j in range(k + 1)]
    return cols


def _as_matrix(value: Any, name: str) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a numeric matrix: {err}") from None
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def write_arch_csv_row(path: str | os.PathLike, epoch: int, op_weights: Any,
                       input_weights: Any) -> Path:
    """Record one epoch's architecture weights in the CSV at ``path``.

    Creates the file with its header on first use. Rows of epochs ``>= epoch`` already in
    the file are dropped first, so a search resumed from an earlier checkpoint rewrites
    its history instead of duplicating it. The whole file is rewritten atomically (it is
    small: one row per epoch). In DDP call it on rank 0 only.

    Args:
        path: the CSV file.
        epoch: the epoch number (an integer >= 0).
        op_weights: ``softmax(alpha / tau)``, ``(K, 24)`` (tensor, array or nested lists).
        input_weights: ``softmax(beta)``, ``(K, K)``, lower-triangular.

    Raises:
        ValueError: bad shapes or values, or an existing file with another header.
    """
    path = Path(path)
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
    alpha = _as_matrix(op_weights, "op_weights")
    beta = _as_matrix(input_weights, "input_weights")
    K = alpha.shape[0]
    if alpha.shape != (K, NUM_OPS):
        raise ValueError(f"op_weights must be (K, {NUM_OPS}), got {alpha.shape}")
    if beta.shape != (K, K):
        raise ValueError(f"input_weights must be ({K}, {K}) for K = {K}, got {beta.shape}")
    header = arch_csv_header(K)
    rows: list[list[str]] = []
    if path.exists():
        with path.open(newline="", encoding="utf-8") as fh:
            existing = list(csv.reader(fh))
        if existing:
            if existing[0] != header:
                raise ValueError(
                    f"{path}: existing architecture CSV has different columns "
                    f"({len(existing[0])} vs {len(header)} for K = {K}); use a new file"
                )
            rows = [r for r in existing[1:] if r and _row_epoch(r[0], path) < epoch]
    values = [str(int(epoch))]
    values += [f"{v:.6g}" for v in alpha.reshape(-1)]
    values += [f"{beta[k, j]:.6g}" for k in range(K) for j in range(k + 1)]
    rows.append(values)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
    return path


def _row_epoch(value: str, path: Path) -> int:
    try:
        return int(float(value))
    except ValueError:
        raise ValueError(f"{path}: bad epoch value {value!r}") from None


_ALPHA_COL = re.compile(r"^alpha\.(\d+)\.(.+)$")
_BETA_COL = re.compile(r"^beta\.(\d+)\.(\d+)$")


def _record_from_flat(row: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``{"epoch", "alpha" (K,24), "beta" (K,K)}`` from a row keyed by CSV column names."""
    if "epoch" not in row:
        raise ValueError(f"{where}: no 'epoch' column")
    alpha_cells: dict[tuple[int, int], float] = {}
    beta_cells: dict[tuple[int, int], float] = {}
    for key, value in row.items():
        if key == "epoch":
            continue
        try:
            if m := _ALPHA_COL.match(str(key)):
                if m.group(2) not in OP_NAMES:
                    raise ValueError(f"unknown operation {m.group(2)!r} in column {key!r}")
                alpha_cells[int(m.group(1)), OP_NAMES.index(m.group(2))] = float(value)
            elif m := _BETA_COL.match(str(key)):
                beta_cells[int(m.group(1)), int(m.group(2))] = float(value)
            else:
                raise ValueError(f"unexpected column {key!r}")
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: {err}") from None
    if not alpha_cells:
        raise ValueError(f"{where}: no alpha.<node>.<op> columns")
    K = 1 + max(k for k, _ in alpha_cells)
    if len(alpha_cells) != K * NUM_OPS:
        raise ValueError(f"{where}: expected {K * NUM_OPS} alpha columns for {K} nodes, "
                         f"got {len(alpha_cells)}")
    alpha = np.zeros((K, NUM_OPS))
    for (k, o), v in alpha_cells.items():
        alpha[k, o] = v
    beta = np.zeros((K, K))
    for (k, j), v in beta_cells.items():
        if not 0 <= j <= k < K:
            raise ValueError(f"{where}: column beta.{k}.{j} out of range for {K} nodes")
        beta[k, j] = v
    return {"epoch": _row_epoch(str(row["epoch"]), Path(where)), "alpha": alpha, "beta": beta}


def read_arch_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read an architecture CSV into ``[{"epoch": int, "alpha": (K,24), "beta": (K,K)}]``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such architecture CSV")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        records = [_record_from_flat(row, f"{path}, line {i + 2}")
                   for i, row in enumerate(reader)]
    return records


def _normalise_history(history: Any) -> list[dict[str, Any]]:
    if isinstance(history, (str, os.PathLike)):
        records = read_arch_csv(history)
        where = str(history)
    else:
        if not isinstance(history, Sequence):
            raise TypeError("history must be a CSV path or a list of per-epoch dicts")
        where = "history"
        records = []
        for i, entry in enumerate(history):
            if not isinstance(entry, Mapping):
                raise TypeError(f"history[{i}] must be a dict, got {type(entry).__name__}")
            if "alpha" in entry:  # structured: {"epoch", "alpha" (K,24), "beta" (K,K)}
                alpha = _as_matrix(entry["alpha"], f"history[{i}]['alpha']")
                beta = entry.get("beta")
                beta = (_as_matrix(beta, f"history[{i}]['beta']") if beta is not None
                        else np.zeros((alpha.shape[0], alpha.shape[0])))
                records.append({"epoch": int(entry.get("epoch", i)), "alpha": alpha,
                                "beta": beta})
            else:  # flat, keyed like the CSV columns
                records.append(_record_from_flat(entry, f"history[{i}]"))
    if not records:
        raise ValueError(f"{where}: no epochs to plot")
    K = records[0]["alpha"].shape[0]
    for rec in records:
        if rec["alpha"].shape != (K, NUM_OPS) or rec["beta"].shape != (K, K):
            raise ValueError(f"{where}: epoch {rec['epoch']} has a different number of nodes")
    return sorted(records, key=lambda r: r["epoch"])


# --------------------------------------------------------------------------- alpha plot


def plot_alpha(history: Any, path: str | os.PathLike, top: int = 3,
               title: str | None = None) -> Path:
    """Plot the architecture weights of a search and write the picture to ``path``.

    Left: heat maps of the last epoch's ``softmax(alpha)`` (one column per node, the 24
    ops as rows, each node's argmax outlined) and ``softmax(beta)`` (node x input).
    Right: ``softmax(alpha)`` over the epochs, one panel per node, the ``top`` ops of the
    last epoch highlighted and the rest in grey, with the uniform level 1/24 dotted.

    Args:
        history: a CSV path (see :func:`write_arch_csv_row`) or a list of per-epoch
            dicts, either keyed like the CSV columns or ``{"epoch", "alpha", "beta"}``
            with ``(K, 24)`` and ``(K, K)`` matrices.
        path: the picture file; written atomically.
        top: how many ops per node to highlight in the curves.
        title: the figure title (default: "architecture weights, epoch N").

    Returns:
        The path written.
    """
    records = _normalise_history(history)
    epochs = np.array([r["epoch"] for r in records])
    alphas = np.stack([r["alpha"] for r in records])  # (E, K, 24)
    last = records[-1]
    K = alphas.shape[1]

    cell_w, cell_h = 0.5, 0.22
    left_w = 2.3 + K * cell_w + 0.9
    right_w = 6.4
    alpha_h = NUM_OPS * cell_h
    beta_h = max(1.0, K * 0.32)
    height = max(alpha_h + beta_h + 1.9, K * 1.35 + 1.0)
    fig = Figure(figsize=(left_w + right_w, height), layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(title or f"architecture weights — epoch {last['epoch']} "
                 f"({len(records)} epoch{'s' if len(records) != 1 else ''} logged)",
                 fontsize=12, fontweight="bold")
    left, right = fig.subfigures(1, 2, width_ratios=[left_w, right_w], wspace=0.02)

    # (a) alpha heat map of the last epoch: ops as rows, nodes as columns.
    ax_a, ax_b = left.subplots(2, 1, height_ratios=[alpha_h, beta_h])
    a = last["alpha"].T  # (24, K)
    im = ax_a.imshow(a, aspect="auto", cmap="viridis", vmin=0.0,
                     vmax=max(float(a.max()), 1.5 / NUM_OPS), interpolation="nearest")
    ax_a.set_yticks(range(NUM_OPS), OP_NAMES, fontsize=7.5, family="monospace")
    ax_a.set_xticks(range(K), [f"node {k}" for k in range(K)], fontsize=8)
    ax_a.xaxis.tick_top()
    ax_a.tick_params(length=0)
    for o, name in enumerate(OP_NAMES):
        ax_a.get_yticklabels()[o].set_color(FAMILY_COLOURS[name.split(".")[0]][1])
    for boundary in range(4, NUM_OPS, 4):
        lw = 1.8 if boundary == NUM_OPS // 2 else 0.7
        ax_a.axhline(boundary - 0.5, color="white", lw=lw)
    for k in range(K):
        best = int(a[:, k].argmax())
        ax_a.add_patch(Rectangle((k - 0.5, best - 0.5), 1, 1, fill=False, edgecolor="#ff3b30",
                                 lw=1.8))
        if K <= 8:
            vmax = im.get_clim()[1]
            for o in range(NUM_OPS):
                v = a[o, k]
                ax_a.text(k, o, f"{v:.2f}".lstrip("0"), ha="center", va="center", fontsize=6,
                          color="black" if v > 0.6 * vmax else "white")
    ax_a.set_title("softmax(α), last epoch (argmax outlined)", fontsize=9)
    cbar = left.colorbar(im, ax=ax_a, shrink=0.6, pad=0.02)
    cbar.ax.tick_params(labelsize=7)

    # beta heat map: node (rows) x input (columns), upper triangle blank.
    b = np.ma.masked_where(np.triu(np.ones((K, K), bool), 1), last["beta"])
    ax_b.imshow(b, aspect="auto", cmap="Greens", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax_b.set_xticks(range(K), ["in"] + [f"n{j}" for j in range(K - 1)], fontsize=8)
    ax_b.set_yticks(range(K), [f"node {k}" for k in range(K)], fontsize=8)
    ax_b.tick_params(length=0)
    for k in range(K):
        best = int(np.argmax(last["beta"][k, : k + 1]))
        ax_b.add_patch(Rectangle((best - 0.5, k - 0.5), 1, 1, fill=False, edgecolor="#ff3b30",
                                 lw=1.8))
        for j in range(k + 1):
            v = last["beta"][k, j]
            ax_b.text(j, k, f"{v:.2f}", ha="center", va="center", fontsize=7,
                      color="white" if v > 0.6 else "black")
    ax_b.set_title("softmax(β): input of each node", fontsize=9)

    # (b) alpha over epochs, one panel per node.
    axes = right.subplots(K, 1, sharex=True, squeeze=False)[:, 0]
    palette = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    marker = "o" if len(records) <= 12 else None
    for k, ax in enumerate(axes):
        series = alphas[:, k, :]  # (E, 24)
        order = np.argsort(-series[-1])
        highlighted = set(order[:top].tolist())
        for o in range(NUM_OPS):
            if o not in highlighted:
                ax.plot(epochs, series[:, o], color="#c8c8c8", lw=0.8, zorder=1)
        for rank, o in enumerate(order[:top]):
            ax.plot(epochs, series[:, o], color=palette[rank % len(palette)], lw=1.8,
                    marker=marker, ms=3, zorder=3,
                    label=f"{OP_NAMES[o]}  {series[-1, o]:.3f}")
        ax.axhline(1.0 / NUM_OPS, color="#555555", lw=0.8, ls=":", zorder=2)
        ax.set_ylabel(f"node {k}", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.25, lw=0.5)
        ax.set_ylim(0, max(float(series.max()) * 1.12, 2.0 / NUM_OPS))
        ax.legend(loc="upper left", frameon=True, framealpha=0.75, edgecolor="none",
                  handlelength=1.5, prop={"family": "monospace", "size": 7})
    axes[0].set_title(f"softmax(α) over epochs (top {top} of the last epoch; "
                      f"dotted: uniform 1/{NUM_OPS})", fontsize=9)
    axes[-1].set_xlabel("epoch", fontsize=9)
    if len(epochs) > 1:
        axes[-1].set_xlim(epochs.min(), epochs.max())
        axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        axes[-1].set_xlim(epochs[0] - 1, epochs[0] + 1)
        axes[-1].set_xticks([epochs[0]])
    return _save(fig, path)
