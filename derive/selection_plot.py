"""The picture of a selection (``selection.png``): every decision of a rule of
:mod:`derive.select`, so a reader sees at a glance which choices were clear and which were
coin tosses.

One row per node: on the left the op decision (every scored candidate's score as a
horizontal bar, best on top, coloured by family; the winner filled, the runner-up
outlined), on the right the input decision. Each panel's title gives the winner, its margin
over the runner-up with the 95 % interval, and says *coin toss* in red when the interval
includes 0. For ``argmax`` the score is the softmax weight and the uniform level is dotted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .picture import FAMILY_COLOURS, save_figure
from .select import score_unit

__all__ = ["plot_selection"]

_INPUT_COLOURS = ("#d9d9d9", "#555555")
_TOSS = "#c0392b"


def _colours(name: str, what: str) -> tuple[str, str]:
    if what == "op":
        return FAMILY_COLOURS.get(name.split(".")[0], _INPUT_COLOURS)
    return _INPUT_COLOURS


def _panel(ax: Any, decision: dict[str, Any], unit: str) -> None:
    """One decision as a bar chart of its candidates' scores (best on top)."""
    if decision.get("runner_up") is None:  # nothing was decided (node 0 reads the input)
        ax.axis("off")
        ax.text(0.0, 0.5, f"node {decision.get('node', '?')} {decision.get('what', 'op')}: "
                f"{decision.get('choice')}\n(the only candidate)", fontsize=8,
                transform=ax.transAxes, va="center")
        return
    scores: dict[str, float] = decision.get("scores") or {}
    what = decision.get("what", "op")
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    names = [n for n, _ in ranked]
    values = [float(v) for _, v in ranked]
    choice, runner = decision.get("choice"), decision.get("runner_up")
    for i, (name, value) in enumerate(zip(names, values)):
        fill, edge = _colours(name, what)
        winner = name == choice
        ax.barh(i, value, height=0.72, color=fill if winner else "white",
                edgecolor=edge, lw=1.6 if name in (choice, runner) else 0.6,
                hatch=None if winner or name == runner else "",
                alpha=1.0 if name in (choice, runner) else 0.75)
    ax.set_yticks(range(len(names)), names, fontsize=6.5 if len(names) > 6 else 7.5)
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.axvline(0.0, color="#999999", lw=0.6)
    if unit == "weight" and names:  # the uniform weight
        ax.axvline(1.0 / len(names), color="#666666", lw=0.8, ls=":")
    ax.tick_params(axis="x", labelsize=6.5)
    ax.xaxis.set_major_locator(MaxNLocator(4))
    ax.grid(axis="x", alpha=0.3, lw=0.5)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    node = decision.get("node", "?")
    margin = float(decision.get("margin") or 0.0)
    ci = decision.get("ci")
    ci_txt = "" if ci is None else f"\n95% CI [{float(ci[0]):+.3g}, {float(ci[1]):+.3g}]"
    toss = decision.get("significant") is False
    factors = decision.get("factors") or {}
    fac_txt = ("\n" + " · ".join(f"{f} {v['choice']}" + (" (clear)" if v.get("significant")
                                                        else " (toss)")
                                 for f, v in factors.items())) if factors else ""
    ax.set_title(f"node {node} {what}: {choice}\nmargin {margin:+.3g} {unit}{ci_txt}"
                 + ("  coin toss" if toss else "") + fac_txt, fontsize=7.5,
                 color=_TOSS if toss else "black", loc="left")


def plot_selection(selection: dict[str, Any], path: str | os.PathLike,
                   title: str | None = None) -> Path:
    """Draw a selection record (``Selection.to_dict()``, as stored in a genotype's
    ``provenance["selection"]``) to ``path`` atomically; returns the path.

    Raises:
        ValueError: a record without decisions, or a suffix matplotlib cannot write.
    """
    decisions = list(selection.get("decisions") or [])
    if not decisions:
        raise ValueError("a selection record without decisions cannot be drawn")
    rule = str(selection.get("rule", "?"))
    unit = score_unit(rule)
    nodes = sorted({int(d.get("node", 0)) for d in decisions})
    by = {(int(d.get("node", 0)), d.get("what", "op")): d for d in decisions}
    rows_h = [max(2.2, 0.16 * max(len(d.get("scores") or {}) for d in decisions
                                  if int(d.get("node", 0)) == k) + 0.9) for k in nodes]
    # one column per kind of decision, in order: op + input, or (perturb_factors)
    # family, dimension, activation + input
    whats = list(dict.fromkeys(str(d.get("what", "op")) for d in decisions))
    height = sum(rows_h) + 0.9 * len(nodes) + 0.9
    widths = [1.4 if w == "op" else 1.0 for w in whats]
    fig = Figure(figsize=(4.4 * sum(widths) + 1.0, height))
    grid = fig.add_gridspec(len(nodes), len(whats), height_ratios=rows_h, width_ratios=widths,
                            hspace=0.9, wspace=0.55 if len(whats) < 3 else 0.9,
                            left=0.2 if len(whats) < 3 else 0.08, right=0.97,
                            top=1 - 1.3 / height, bottom=0.35 / height)
    for r, k in enumerate(nodes):
        for c, what in enumerate(whats):
            ax = fig.add_subplot(grid[r, c])
            d = by.get((k, what))
            if d is None:
                ax.axis("off")
                continue
            _panel(ax, d, unit)
    flagged = sum(1 for d in decisions if d.get("significant") is False and d.get("runner_up"))
    decided = sum(1 for d in decisions if d.get("runner_up"))
    clips = selection.get("clips") or 0
    head = (f"{title + ' — ' if title else ''}selection: {rule} "
            f"({selection.get('score', '')}{f', {clips} validation clips' if clips else ''}); "
            f"{flagged} of {decided} decisions are coin tosses")
    fig.suptitle(head, fontsize=9.5, color=_TOSS if flagged else "black")
    return save_figure(fig, path)
