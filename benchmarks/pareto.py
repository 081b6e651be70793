"""The cost-aware study of the accuracy benchmark: the budget table, its targets and the
Pareto picture (top-1 vs the MACs and the parameters the attention blocks add).

A budgeted group is a search group with a ``cost<target>`` token (``benchmarks.groups``);
its cells carry their budget in ``provenance.selection.budget`` and the matched-cost random
cells (rows of kind ``random_cost``) in ``provenance.budget``. Costs here are what the
blocks *add* to the bare proxy (row MACs minus the ``none`` row's), the quantity a budget
constrains.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from benchmarks.common import save_figure_atomic

__all__ = ["budget_groups", "cost_lines", "pareto_plot"]


def _target(block: str) -> int | None:
    """The budget (MACs) a genotype file was selected / fitted under, if any."""
    try:
        prov = json.loads(Path(block).read_text()).get("provenance", {})
    except (OSError, ValueError):
        return None
    budget = (prov.get("selection") or {}).get("budget") or prov.get("budget") or {}
    value = budget.get("target_macs")
    return int(value) if isinstance(value, (int, float)) else None


def budget_groups(plan: Any) -> list[tuple[str, str]]:
    """``[(group, target spec), ...]`` of the plan's budgeted groups, in plan order."""
    out = []
    for group in plan.groups:
        for token in group.split("+"):
            if token.startswith("cost") and len(token) > 4:
                out.append((group, token[4:]))
    return out


def _stats(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _delta(a: list[float], b: list[float]) -> tuple[float, float]:
    """Difference of means and its standard error sqrt(s_a^2/n_a + s_b^2/n_b)."""
    (ma, sa), (mb, sb) = _stats(a), _stats(b)
    return ma - mb, math.sqrt(sa ** 2 / len(a) + sb ** 2 / len(b))


def _fmt_delta(a: list[float], b: list[float]) -> str:
    if not a or not b:
        return "—"
    d, se = _delta(a, b)
    return f"{d:+.1f} ± {se:.1f}"


def _fmt(values: list[float]) -> str:
    if not values:
        return "—"
    mean, std = _stats(values)
    return f"{mean:.1f} ± {std:.1f}" if len(values) > 1 else f"{mean:.1f}"


def _runs(values: list[float], expected: int) -> str:
    """`` (n of N runs)`` for a group that has not finished its runs, else ``""``."""
    return f" ({len(values)} of {expected} runs)" if values and len(values) < expected else ""


def cost_lines(plan: Any, table: list[dict[str, Any]]) -> list[str]:
    """The markdown section of the cost-aware study (empty without budgeted groups)."""
    groups = budget_groups(plan)
    by_key = {e["key"]: e for e in table}
    none, nl = by_key.get("none"), by_key.get("nonlocal")
    if not groups or not none or not none.get("macs"):
        return []
    # the control: a non-local block with the cells' own positional encoding
    nl_pos = next((e for e in table if e["kind"] == "baseline" and not e["summary"]
                   and e.get("label", "").startswith("nonlocal_") and e.get("values")), None)
    nl_vals = list(nl.get("values") or []) if nl else []
    base_macs, base_params = none["macs"], none["params"] or 0.0
    nl_add = (nl["macs"] - base_macs) if nl and nl.get("macs") else math.nan
    lines = ["| budget | target +MMACs | cells' +MMACs (% of target) | cells' +params | "
             "searched top-1 (%) | Δ vs nonlocal | matched random top-1 (%) | Δ vs random |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    targets_txt = []
    for group, spec in groups:
        cells = [e for e in table if e["kind"] == "searched" and e["group"] == group
                 and not e["summary"]]
        rand = [e for e in table if e["kind"] == "random_cost" and e["group"] == f"cost{spec}"
                and not e["summary"]]
        targets = [t for t in (_target(e.get("block", "")) for e in cells + rand) if t]
        target = targets[0] if targets else None
        adds = [e["macs"] - base_macs for e in cells if e.get("macs")]
        padds = [e["params"] - base_params for e in cells if e.get("params")]
        vals = [v for e in cells for v in e["values"]]
        rvals = [v for e in rand for v in e["values"]]
        share = (f" ({statistics.fmean(adds) / target:.0%})" if adds and target else "")
        lines.append(
            f"| {spec} (`{group}`) | {target / 1e6:.1f} |" if target else f"| {spec} | — |")
        lines[-1] += (f" {statistics.fmean(adds) / 1e6:.1f}{share} |" if adds else " — |")
        lines[-1] += (f" {statistics.fmean(padds):,.0f} |" if padds else " — |")
        seeds = len(getattr(plan, "train_seeds", []) or [])
        expected, r_expected = len(cells) * seeds, len(rand) * seeds
        lines[-1] += (f" {_fmt(vals)}{_runs(vals, expected)} | {_fmt_delta(vals, nl_vals)} | "
                      f"{_fmt(rvals)}{_runs(rvals, r_expected)} | {_fmt_delta(vals, rvals)} |")
        ratio = _ratio(spec)
        where = f"budget {spec} (`{group}`)"
        if ratio is not None and ratio <= 1.0 and vals and nl_vals:
            d, se = _delta(vals, nl_vals)
            n_cells = sum(1 for e in cells if e["values"])
            partial = (f", incomplete: {len(vals)} of {expected} runs" if len(vals) < expected
                       else "")
            verdict = "met" if d >= 2.0 else f"not met, by {2.0 - d:.1f}"
            if partial:
                verdict = f"{verdict} so far"
            elif d >= 2.0 and d - 2.0 < 2 * se:
                verdict += (f" in the mean, but not resolved: the margin over +2 is "
                            f"{(d - 2.0) / se:.1f} standard errors")
            line = (f"- {where}: searched mean − nonlocal **{d:+.1f} ± {se:.1f} points** "
                    f"({len(vals)} runs of {n_cells} cells{partial}; target ≥ +2.0): "
                    f"{verdict}.")
            if nl_pos is not None:
                dp, sep = _delta(vals, list(nl_pos["values"]))
                line += (f" Against `{nl_pos['label']}` (the control: non-local blocks with "
                         f"the cells' positional encoding): {dp:+.1f} ± {sep:.1f}.")
            targets_txt.append(line)
        if adds and target:
            worst = max(abs(a / target - 1) for a in adds)
            targets_txt.append(f"- {where}: cells' real +MACs within "
                               f"{worst:.0%} of the target (target ≤ 10 %): "
                               f"{'met' if worst <= 0.10 else 'not met'}.")
    darts = any(g.split("+")[0] == "darts" for g, _ in groups)
    minw = any(t.startswith("minw") for g, _ in groups for t in g.split("+"))
    lines += ["", f"Non-local blocks add {nl_add / 1e6:.1f} MMACs to the proxy; the budgets "
              "are ratios of that. A budgeted `uniform` group selects from the unbudgeted "
              "supernets (their weights never see α, so the budget only changes the "
              "selection): it keeps the choices whose cell fits the budget and fits the cell's "
              "inner width to it (`supernet.costmodel.CellBudget`); "
              + ("a budgeted `darts` group trains its own supernets with the expected-cost "
                 "term relu(E[MACs]/target − 1) in the architecture loss, so the budget "
                 "moves α toward cheaper ops before the same budgeted selection; "
                 if darts else "")
              + ("a `minw<r>` group keeps the most leading nodes that fit at inner ratio ≥ r "
                 "and drops the trailing ones, so a small budget buys fewer, wider nodes; "
                 if minw else "")
              + "the matched random cells "
              "are the random cells fitted the same way. Top-1: mean ± std over search seeds × "
              "training seeds (random: over cells × training seeds); Δ: difference of means ± "
              "its standard error.", "", *targets_txt, ""]
    return lines


def _ratio(spec: str) -> float | None:
    text = spec.lower()
    if text.endswith("x") or text.endswith("xnonlocal"):
        try:
            return float(text.split("x")[0])
        except ValueError:
            return None
    return 1.0 if text == "nonlocal" else None


def pareto_plot(table: list[dict[str, Any]], path: Path, title: str) -> Path | None:
    """Top-1 vs the MACs (left) and parameters (right) the blocks add to the bare proxy:
    baselines, every searched cell (coloured by group), random and matched-cost random cells,
    error bars = std over training seeds; the non-local block marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_key = {e["key"]: e for e in table}
    none = by_key.get("none")
    pts = [e for e in table if "mean" in e and not e["summary"] and e.get("macs")
           and math.isfinite(e["macs"]) and e["kind"] != "budget"]
    if not none or not none.get("macs") or not pts:
        return None
    groups = list(dict.fromkeys(e["group"] for e in pts if e["kind"] == "searched"))
    # blue is the baselines' and grey the random cells': 8 colours left, so budgeted groups
    # (diamonds) and the others (circles) each get distinct colours up to 8 groups
    cmap = plt.get_cmap("tab10")
    palette = [cmap(i) for i in (1, 2, 3, 4, 5, 6, 8, 9)]
    style: dict[str, tuple[Any, str, str]] = {}
    counts = {"o": 0, "D": 0}
    for g in groups:
        marker = "D" if any(tok.startswith("cost") for tok in g.split("+")) else "o"
        style[f"searched:{g}"] = (palette[counts[marker] % len(palette)], marker, g)
        counts[marker] += 1
    fig, axes = plt.subplots(1, 2, figsize=(12, 6), sharey=True)
    for ax, field, scale, unit in ((axes[0], "macs", 1e6, "MMACs"),
                                   (axes[1], "params", 1e3, "k params")):
        base = none[field] or 0.0
        seen: set[str] = set()
        for e in pts:
            if e["kind"] == "searched":
                colour, marker, label = style[f"searched:{e['group']}"]
            elif e["kind"] == "baseline":
                colour, marker, label = "#1f77b4", "s", "baselines"
            elif e["kind"] == "random_cost":
                colour, marker, label = "#bbbbbb", "v", "random cells, fitted to a budget"
            else:
                colour, marker, label = "#7f7f7f", "^", "random cells"
            x = (e[field] - base) / scale
            ax.errorbar([x], [e["mean"]], yerr=[e.get("std", 0.0)], fmt=marker, color=colour,
                        capsize=3, ms=6 if e["kind"] != "baseline" else 7,
                        label=None if label in seen else label)
            seen.add(label)
            if e["kind"] == "baseline":
                ax.annotate(e["label"], (x, e["mean"]), textcoords="offset points",
                            xytext=(5, 4), fontsize=7, color=colour)
        nl = by_key.get("nonlocal")
        if nl and "mean" in nl and nl.get(field):
            x = (nl[field] - base) / scale
            ax.scatter([x], [nl["mean"]], marker="*", s=260, facecolor="none",
                       edgecolor="k", linewidth=1.2, zorder=5, label="nonlocal")
            ax.axvline(x, ls=":", lw=1, color="k", alpha=0.5)
        ax.set_xlabel(f"{unit} the blocks add to the proxy (per clip)" if field == "macs"
                      else f"{unit} the blocks add")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("video top-1 on the test split (%)")
    axes[0].set_ylim(0, 105)  # error bars (std) of bimodal runs would run past 100 %
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=4, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return save_figure_atomic(fig, path, 120)
