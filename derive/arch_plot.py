"""The picture of a search's architecture weights: :func:`plot_alpha`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator

from supernet.space import FACTORS, NUM_OPS, OP_NAMES

from .arch_record import arch_history
from .picture import FAMILY_COLOURS, save_figure

__all__ = ["plot_alpha", "FACTOR_COLOURS"]

#: Segment colours of the factor-share bars: family in the family colours of the cell
#: picture, dimension in greens, activation in purples (light to dark in FACTORS order).
FACTOR_COLOURS: dict[str, tuple[str, ...]] = {
    "family": ("#eeaa66", "#5f97d0"),
    "dimension": ("#c7e9c0", "#74c476", "#238b45"),
    "activation": ("#ebe9f4", "#bcbddc", "#807dba", "#54278f"),
}
_SHORT = {"spatiotemporal": "spatiotemp.", "identity": "ident.", "softmax": "softm.",
          "sigmoid": "sigm.", "temporal": "temp.", "spatial": "spat."}


def _is_dark(colour: str) -> bool:
    r, g, b = (int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5))
    return 0.299 * r + 0.587 * g + 0.114 * b < 0.5


def _fit_label(value: str, share: float, width_in: float, fontsize: float) -> str:
    """The longest of a few labels of a bar segment that fits ``width_in`` inches."""
    pct = f"{100 * share:.0f}%"
    short = _SHORT.get(value, value)
    char_in = 0.6 * fontsize / 72  # a generous average glyph width
    for label in (f"{value} {pct}", f"{value}\n{pct}", f"{short}\n{pct}", short, pct):
        if max(map(len, label.split("\n"))) * char_in <= width_in - 0.04:
            return label
    return ""


def _factor_key(ax: Any) -> None:
    """A colour key under ``ax``: one row per factor, its values left to right in bar
    order (a legend filled column by column, padded with blank entries)."""
    ncols = max(len(v) for v in FACTORS.values())
    blank = Patch(color="none", label="")
    columns: list[list[Patch]] = [[] for _ in range(ncols)]
    for factor, values in FACTORS.items():
        for c in range(ncols):
            columns[c].append(Patch(facecolor=FACTOR_COLOURS[factor][c], edgecolor="#999999",
                                    lw=0.4, label=values[c]) if c < len(values) else blank)
    handles = [h for col in columns for h in col]
    ax.legend(handles=handles, labels=[h.get_label() for h in handles], ncols=ncols,
              loc="upper center", bbox_to_anchor=(0.45, -0.14), frameon=False,
              fontsize=6.5, handlelength=0.9, handleheight=0.9, handletextpad=0.3,
              columnspacing=0.7, labelspacing=0.25)


def _factor_bars(ax: Any, marg: dict[str, np.ndarray], node: int, bottom: bool,
                 width_in: float) -> None:
    """Three horizontal stacked bars on ``ax``: node ``node``'s family / dimension /
    activation shares (``marg[factor]`` is ``(K, n_values)``; each row is normalised to
    its sum, which is 1 for softmax weights); ``width_in`` is about the bar's length in
    inches, to choose segment labels that fit."""
    fontsize = 6.5
    for row, (factor, values) in enumerate(FACTORS.items()):
        shares = np.asarray(marg[factor][node], dtype=np.float64)
        total = float(shares.sum())
        shares = shares / total if total > 0 else np.full(len(values), 1 / len(values))
        ranked = np.sort(shares)[::-1]
        # The leading value is set in bold, unless it is a tie (e.g. the uniform start).
        leader = int(shares.argmax()) if ranked[0] - ranked[1] >= 0.01 else -1
        left = 0.0
        for v, (value, share) in enumerate(zip(values, shares)):
            colour = FACTOR_COLOURS[factor][v]
            ax.barh(row, share, left=left, height=0.8, color=colour, edgecolor="white",
                    lw=0.8)
            label = _fit_label(value, float(share), share * width_in, fontsize)
            if label:
                ax.text(left + share / 2, row, label, ha="center", va="center",
                        fontsize=fontsize, linespacing=1.0,
                        color="white" if _is_dark(colour) else "black",
                        fontweight="bold" if v == leader else "normal")
            left += share
    ax.set_xlim(0, 1)
    ax.set_ylim(len(FACTORS) - 0.5, -0.5)
    ax.set_yticks(range(len(FACTORS)), list(FACTORS), fontsize=7.5)
    ax.tick_params(length=0, labelsize=7)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0", "", "50%", "", "100%"] if bottom
                  else [""] * 5)
    ax.grid(axis="x", alpha=0.3, lw=0.5)
    ax.set_axisbelow(True)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)


def plot_alpha(history: Any, path: str | os.PathLike, top: int = 3,
               title: str | None = None) -> Path:
    """Plot the architecture weights of a search and write the picture to ``path``.

    Left: heat maps of the last epoch's ``softmax(alpha)`` (one column per node, the 24
    ops as rows, each node's argmax outlined) and ``softmax(beta)`` (node x input).
    Right: ``softmax(alpha)`` over the epochs, one panel per node, the ``top`` ops of the
    last epoch highlighted and the rest in grey, with the uniform level 1/24 dotted; and
    beside each, the node's factor marginals of the last epoch as three stacked bars
    (family, dimension, activation shares; see :func:`supernet.space.factor_marginals`),
    so "mostly dot-product, temporal" reads at a glance.

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
    records = arch_history(history)
    epochs = np.array([r["epoch"] for r in records])
    alphas = np.stack([r["alpha"] for r in records])  # (E, K, 24)
    last = records[-1]
    K = alphas.shape[1]

    cell_w, cell_h = 0.5, 0.22
    left_w = 2.3 + K * cell_w + 0.9
    curves_w, factors_w = 6.4, 3.0
    right_w = curves_w + factors_w
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

    # (b) alpha over epochs, one panel per node, and (c) its factor shares beside it.
    grid = right.subplots(K, 2, squeeze=False, width_ratios=[curves_w, factors_w])
    axes = grid[:, 0]
    for ax in axes[1:]:
        ax.sharex(axes[0])
    for ax in axes[:-1]:
        ax.tick_params(labelbottom=False)
    for k, ax in enumerate(grid[:, 1]):
        _factor_bars(ax, last["marginals"], k, bottom=k == K - 1, width_in=factors_w - 0.9)
    grid[0, 1].set_title("factor shares of softmax(α), last epoch", fontsize=9)
    _factor_key(grid[-1, 1])
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
    return save_figure(fig, path)
