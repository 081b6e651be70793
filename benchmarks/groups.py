"""Search groups of the accuracy benchmark: how a supernet is trained and how the cell is
selected, and the per-group report (accuracy over search x training seeds, agreement of
the search seeds, search cost, the selection's coin tosses, the targets).

A *group spec* names a way to search with ``+``-joined tokens, in any order:

* a supernet mode of :data:`supernet.search.SUPERNET_MODES` (a training strategy of
  :mod:`supernet.strategies`: ``darts``, ``single_path``, ``uniform``),
* a selection rule of :data:`derive.select.SELECTION_RULES` (a rule of :mod:`derive.rules`:
  ``alone``, ``argmax``, ``perturb``, ``perturb_factors``),
* optionally a cell position option of :data:`supernet.space.POSITIONS` (``none``,
  ``coords``, ``sincos``),
* optionally a search length ``<N>ep`` (e.g. ``6ep``: this group searches for 6 epochs
  instead of the benchmark's ``--search-epochs``),
* optionally a cost budget ``cost<target>`` (e.g. ``cost0.5x``: ``--model.cost_target
  0.5x``, half the MACs of the non-local blocks; any form of
  :func:`supernet.costmodel.parse_cost_target`). A budgeted ``uniform`` or
  ``single_path`` group re-selects from the supernets of the unbudgeted group (the budget
  only changes the selection there); a ``darts`` one trains its own (the budget enters
  the architecture loss),
* optionally the weight of that expected-cost term ``cw<weight>`` (e.g. ``cw0``:
  ``--model.cost_weight 0``; default the config's, 1). With ``cw0`` a budgeted ``darts``
  group's α never sees the budget, so it re-selects from the unbudgeted group's
  supernets, as a ``uniform`` one does,
* optionally ``minw<ratio>`` (e.g. ``minw0.25``: ``--model.cost_min_width 0.25``): the
  budget also sets the number of nodes, keeping the most leading nodes that fit at an
  inner ratio >= that (a selection setting: such a group re-selects).

Tokens left out keep the search config's value (or :class:`~supernet.search.SearchModule`'s
default, where the config sets none). ``darts+argmax`` is round 1's search;
``uniform+perturb+sincos`` trains every candidate equally with sinusoidal positions and
selects by perturbation. A group's *name* is written from its resolved settings (the
position and remedy only when they are not ``none``), so a group keeps its name (and its
finished runs) when the config's defaults change.
"""

from __future__ import annotations

import inspect
import json
import math
import statistics
from collections import Counter
from typing import Any

from benchmarks.common import finite_float as _float
from derive.select import SELECTION_RULES
from supernet.costmodel import check_min_width, parse_cost_target
from supernet.search import SUPERNET_MODES, SearchModule
from supernet.space import POSITIONS

__all__ = ["group_name", "search_default", "parse_group", "group_rows", "group_table_lines",
           "target_lines", "budget_lines", "agreement"]

#: the benchmark's groups when --groups is not given; the first is the default group (the
#: search config's settings with the search length the benchmark measured for it), then the
#: groups the targets name (the 3-epoch search, which decides whether ``make demo`` can be
#: shorter; the issue's supernet modes; the position study), the rule studies that decide
#: the default rule on the same supernets (``uniform+alone``, ``darts+perturb``), the
#: cost-aware study, which builds on that default, and ``single_path+alone`` last. The
#: bench runs them in this order, each group's searches and then its rows. Groups
#: that differ only in the selection rule (``+alone``, ``darts+perturb``) re-select from the
#: supernets trained by the group before them, so each supernet is trained once and the
#: rules are compared on the same supernets. With the config's ``position: sincos`` the
#: first two are ``uniform+perturb+sincos+5ep`` / ``uniform+alone+sincos+5ep``;
#: ``uniform+perturb+none+5ep`` is the position study's other arm (named
#: ``uniform+perturb+5ep``). The ``cost`` groups are the cost-aware study (budgets of 0.5, 1
#: and 2 times the non-local blocks' MACs), re-selected from the default group's supernets;
#: ``darts+argmax+cost1x+cw0`` re-selects from ``darts+argmax``'s supernets under the
#: budget (argmax of an alpha that never saw it), ``+minw0.5`` the same with the budget
#: buying fewer nodes rather than nodes narrower than the supernet's own width (the ops
#: were scored at inner ratio 1/2); ``darts+argmax+cost1x`` trains its own
#: supernets with the expected-cost term in the architecture loss (the budget then shapes
#: alpha, not only the selection).
DEFAULT_GROUPS = ("uniform+perturb+5ep", "uniform+perturb", "darts+argmax",
                  "single_path+perturb", "uniform+perturb+none+5ep", "uniform+alone+5ep",
                  "darts+perturb", "uniform+perturb+5ep+cost0.5x",
                  "uniform+perturb+5ep+cost1x", "darts+argmax+cost1x+cw0",
                  "darts+argmax+cost1x+cw0+minw0.5", "darts+argmax+cost1x",
                  "uniform+perturb+5ep+cost2x", "single_path+alone")


def _vocab() -> dict[str, tuple[str, ...]]:
    return {"strategy": SUPERNET_MODES, "select": SELECTION_RULES,
            "position_encoding": POSITIONS}


def search_default(name: str) -> Any:
    """The default of a :class:`supernet.search.SearchModule` argument (what a search
    config that leaves ``name`` out runs with)."""
    return inspect.signature(SearchModule.__init__).parameters[name].default


def group_name(model: dict[str, Any]) -> str:
    """The name of the group a search ``model`` dict belongs to (settings it leaves out
    are :class:`~supernet.search.SearchModule`'s defaults), e.g. ``uniform+perturb+sincos``
    or ``darts+argmax``."""
    def get(key: str) -> Any:
        return model[key] if key in model else search_default(key)

    parts = [str(get("strategy")), str(get("select"))]
    if str(get("position_encoding")) != "none":
        parts.append(str(get("position_encoding")))
    if str(get("anti_collapse")) != "none":  # "remedy=": the names of the results so far
        parts.append(f"remedy={get('anti_collapse')}")
    if get("cost_target") is not None:
        parts.append(f"cost{get('cost_target')}")
        if float(get("cost_weight")) != 1.0:
            parts.append(f"cw{float(get('cost_weight')):g}")
        if float(get("cost_min_width")) > 0:
            parts.append(f"minw{float(get('cost_min_width')):g}")
    return "+".join(parts)


def parse_group(spec: str) -> dict[str, Any]:
    """The model overrides of a group spec (see the module docstring); a search length
    comes back as ``{"search_epochs": N}``.

    Raises:
        ValueError: an unknown token, or two values of one setting; the message lists what
            is accepted.
    """
    vocab = _vocab()
    over: dict[str, Any] = {}
    tokens = [t.strip() for t in spec.split("+")]
    if not spec.strip() or not all(tokens):
        raise ValueError(f"empty group spec in {spec!r}")
    for token in tokens:
        if token.endswith("ep") and token[:-2].isdigit() and int(token[:-2]) >= 1:
            if "search_epochs" in over and over["search_epochs"] != int(token[:-2]):
                raise ValueError(f"group {spec!r} gives two search lengths")
            over["search_epochs"] = int(token[:-2])
            continue
        if token.startswith("cost") and len(token) > 4:
            parse_cost_target(token[4:])  # ValueError names the accepted forms
            if "cost_target" in over and over["cost_target"] != token[4:]:
                raise ValueError(f"group {spec!r} gives two cost targets")
            over["cost_target"] = token[4:]
            continue
        if token.startswith("cw") and len(token) > 2:
            try:
                weight = float(token[2:])
            except ValueError:
                weight = math.nan
            if not weight >= 0 or math.isinf(weight):
                raise ValueError(f"cost weight {token!r} in group {spec!r}: expected cw<number "
                                 ">= 0>, e.g. cw0")
            if "cost_weight" in over and over["cost_weight"] != weight:
                raise ValueError(f"group {spec!r} gives two cost weights")
            over["cost_weight"] = weight
            continue
        if token.startswith("minw") and len(token) > 4:
            try:
                width = check_min_width(float(token[4:]))
            except ValueError:
                raise ValueError(f"node width {token!r} in group {spec!r}: expected "
                                 f"minw<inner ratio in [0, 1]>, e.g. minw0.25") from None
            if "cost_min_width" in over and over["cost_min_width"] != width:
                raise ValueError(f"group {spec!r} gives two node widths")
            over["cost_min_width"] = width
            continue
        key = next((k for k, values in vocab.items() if token in values), None)
        if key is None:
            accepted = "; ".join(f"{k}: {', '.join(v)}" for k, v in vocab.items())
            raise ValueError(f"unknown token {token!r} in group {spec!r}; accepted ({accepted}; "
                             f"search length: <N>ep; budget: cost<target>, e.g. cost0.5x; "
                             f"its weight: cw<weight>, e.g. cw0; the narrowest node: "
                             f"minw<ratio>, e.g. minw0.25)")
        if key in over and over[key] != token:
            raise ValueError(f"group {spec!r} gives two {key} values ({over[key]}, {token})")
        over[key] = token
    for key, token in (("cost_weight", "a cost weight (cw...)"),
                       ("cost_min_width", "a node width (minw...)")):
        if key in over and "cost_target" not in over:
            raise ValueError(f"group {spec!r}: {token} needs a budget (cost<target>)")
    return over


# ------------------------------------------------------------------------------ report
def _stats(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def group_rows(table: list[dict[str, Any]], group: str) -> list[dict[str, Any]]:
    """The searched-cell entries of ``group`` in a summarised accuracy table."""
    return [e for e in table if e["kind"] == "searched" and e["group"] == group
            and not e["summary"]]


def agreement(cells: list[list[list[Any]]]) -> list[dict[str, Any]]:
    """Per node: how many of the cells (node lists ``[[op, input], ...]``) agree on the
    most common family, dimension and op. Returns ``[{"family": (value, count), ...}]``."""
    out = []
    for k in range(max((len(c) for c in cells), default=0)):
        ops = [c[k][0] for c in cells if len(c) > k]
        entry = {}
        for name, pick in (("family", lambda op: op.split(".")[0]),
                           ("dimension", lambda op: op.split(".")[1]),
                           ("op", lambda op: op)):
            value, count = Counter(pick(op) for op in ops).most_common(1)[0]
            entry[name] = (value, count)
        entry["n"] = len(ops)
        out.append(entry)
    return out


def summarise_group(plan: Any, table: list[dict[str, Any]], srch: Any, group: str
                    ) -> dict[str, Any]:
    """Everything the group table says about ``group``: top-1 over all its (cell, training
    seed) runs, the search seeds' cells and agreement, search cost and coin tosses."""
    cells = [e for e in group_rows(table, group) if "mean" in e]
    vals = [v for e in cells for v in e["values"]]
    jobs = [j for j in plan.searches if j.group == group and j.repeat == 0]
    recs = [srch.get(j.key) for j in jobs]
    ok = [r for r in recs if r and r.get("status") == "ok" and r.get("nodes")]
    walls = [w for w in (_float(r.get("total_s")) for r in ok) if w]
    peaks = [p for p in (_float(r.get("peak_rss_mib")) for r in ok) if p]
    flagged = [int(f) for f in (_float(r.get("flagged")) for r in ok) if f is not None]
    out: dict[str, Any] = {
        "group": group, "cells": len(cells), "runs": len(vals), "searches": len(jobs),
        "searched": len(ok), "nodes": [json.loads(r["nodes"]) for r in ok],
        "wall": statistics.fmean(walls) if walls else None,
        "peak": max(peaks) if peaks else None,
        "flagged": sum(flagged) if flagged else None,
        "decisions": sum(len(json.loads(r["decisions"])) for r in ok if r.get("decisions"))
        if any(r.get("decisions") for r in ok) else None,
    }
    if vals:
        out["mean"], out["std"] = _stats(vals)
        out["n"] = len(vals)
    out["agreement"] = agreement(out["nodes"])
    out["family_clear"] = _family_clear(ok)
    return out


def _family_clear(records: list[dict[str, Any]]) -> tuple[int, int] | None:
    """(nodes whose family choice is significant, nodes) over the searches' decisions: an
    op decision's factor record (``perturb``, ``alone``) or a ``family`` decision
    (``perturb_factors``). None when no decision carries that information (``argmax``)."""
    clear = total = 0
    for r in records:
        for d in json.loads(r["decisions"]) if r.get("decisions") else []:
            if d.get("what") == "family":
                sig = d.get("significant")
            elif d.get("what") == "op" and (d.get("factors") or {}).get("family"):
                sig = d["factors"]["family"].get("significant")
            else:
                continue
            total += 1
            clear += bool(sig)
    return (clear, total) if total else None


def _delta(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    if not a or not b or "mean" not in a or "mean" not in b:
        return "—"
    d = a["mean"] - b["mean"]
    if a.get("n", 0) > 1 and b.get("n", 0) > 1:
        se = math.sqrt(a["std"] ** 2 / a["n"] + b["std"] ** 2 / b["n"])
        return f"{d:+.1f} ± {se:.1f}"
    return f"{d:+.1f}"


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"


def _agree_text(agree: list[dict[str, Any]], what: str) -> str:
    if not agree:
        return "—"
    return " · ".join(f"{a[what][0]} {a[what][1]}/{a['n']}" for a in agree)


def _random_pool(table: list[dict[str, Any]]) -> dict[str, Any] | None:
    vals = [v for e in table if e["kind"] == "random" and not e["summary"] and "mean" in e
            for v in e["values"]]
    if not vals:
        return None
    mean, std = _stats(vals)
    return {"mean": mean, "std": std, "n": len(vals)}


def group_table_lines(plan: Any, table: list[dict[str, Any]], srch: Any) -> list[str]:
    """The markdown table with one line per search group."""
    by_key = {e["key"]: e for e in table}
    nl, rnd = by_key.get("nonlocal"), _random_pool(table)
    lines = ["| search group | cells | runs | video top-1 (%) | Δ vs nonlocal | Δ vs random "
             "| family agreement per node | dimension agreement per node | coin tosses "
             "| clear family choices | search wall (mean) | peak RSS |",
             "|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|"]
    for group in plan.groups:
        g = summarise_group(plan, table, srch, group)
        acc = (f"{g['mean']:.1f} ± {g['std']:.1f}" if g.get("n", 0) > 1
               else f"{g['mean']:.1f}" if "mean" in g else "—")
        tosses = "—" if g["flagged"] is None else \
            f"{g['flagged']}/{g['decisions']}" if g["decisions"] else str(g["flagged"])
        star = " (default)" if group == plan.default_group else ""
        peak = "—" if g["peak"] is None else f"{g['peak']:,.0f} MiB"
        fam = "—" if g["family_clear"] is None else "{}/{}".format(*g["family_clear"])
        lines.append(
            f"| `{group}`{star} | {g['cells']}/{g['searches']} | {g['runs']} | {acc} | "
            f"{_delta(g, nl)} | {_delta(g, rnd)} | {_agree_text(g['agreement'], 'family')} | "
            f"{_agree_text(g['agreement'], 'dimension')} | {tosses} | {fam} | "
            f"{_fmt_s(g['wall'])} | "
            f"{peak} |")
    lines += ["", "Top-1: mean ± std over every (search seed, training seed) run of the "
              "group. Δ: difference of means ± its standard error; `random` pools every "
              "random-cell run. Agreement: how many search seeds chose the most common "
              "family / dimension at each node. Coin tosses: selection decisions whose "
              "95 % interval of the margin over the runner-up includes 0 (argmax: a winner "
              "below 1.5× the uniform weight), over all decisions of the group's searches. "
              "Clear family choices: nodes whose family (map vs dot) decision alone has a "
              "95 % interval excluding 0. "
              "Search wall: the whole search process, selection included; a group that "
              "differs from an earlier one only in its selection rule re-selects from that "
              "group's trained supernets (`supernet_from` in search.csv) and counts their "
              "training plus its own selection.", ""]
    return lines


def target_lines(plan: Any, table: list[dict[str, Any]], srch: Any) -> list[str]:
    """The targets of the default group, each measured, met or not, and by how much."""
    by_key = {e["key"]: e for e in table}
    nl, rnd = by_key.get("nonlocal"), _random_pool(table)
    g = summarise_group(plan, table, srch, plan.default_group)
    out = [f"Default group: `{plan.default_group}` ({g['searched']} of {g['searches']} "
           f"search seeds finished, {g.get('n', 0)} retrain runs)."]
    if "mean" in g and nl and "mean" in nl:
        d = g["mean"] - nl["mean"]
        out.append(f"- mean − nonlocal: **{d:+.1f} points** (target ≥ +2.0): "
                   f"{'met' if d >= 2.0 else f'not met, by {2.0 - d:.1f}'}.")
    control = next((e for e in table if e["key"].endswith("nonlocal_sincos.json")
                    and "mean" in e), None)
    if "mean" in g and control:
        d = g["mean"] - control["mean"]
        verdict = ("the search adds to the positions" if d >= 2.0
                   else "the positions explain the gain, not the search")
        out.append(f"- mean − `nonlocal_sincos` (the control: a non-local block with the same "
                   f"sinusoidal positions; not one of the issue's targets): **{d:+.1f} "
                   f"points** — {verdict}.")
    if "mean" in g and rnd:
        d = g["mean"] - rnd["mean"]
        out.append(f"- mean − random cells: **{d:+.1f} points** (target ≥ +10.0): "
                   f"{'met' if d >= 10.0 else f'not met, by {10.0 - d:.1f}'}.")
    if g["agreement"] and g["searched"] >= 3:
        fam = [a["family"][1] for a in g["agreement"]]
        need = math.ceil(2 * g["searched"] / 3)
        ok = all(c >= need for c in fam)
        counts = ", ".join(f"{c}/{g['searched']}" for c in fam)
        out.append(f"- family agreement per node: {counts} (target ≥ {need}/{g['searched']} "
                   f"on every node): "
                   f"{'met' if ok else 'not met'}.")
    darts = next((x for x in plan.groups if x.startswith("darts+argmax")
                  and "ep" not in x.rsplit("+", 1)[-1]), None)
    base = summarise_group(plan, table, srch, darts) \
        if darts and plan.default_group != darts else None
    if base and base["wall"] and g["wall"]:
        ratio = g["wall"] / base["wall"]
        out.append(f"- search wall time vs `{darts}`: **{ratio:.2f}×** "
                   f"({_fmt_s(g['wall'])} vs {_fmt_s(base['wall'])}; target ≤ 1.5×): "
                   f"{'met' if ratio <= 1.5 else 'not met'}.")
    return out


def budget_lines(table: list[dict[str, Any]], epochs: int) -> list[str]:
    """Training-seed std of ``nonlocal`` at the benchmark's budget and at the budget-study
    rows (``nonlocal@<E>ep``): the retrain budget must resolve a 2-point difference."""
    rows = [e for e in table if e["kind"] in ("baseline", "budget") and not e["summary"]
            and (e["key"] == "nonlocal" or e["key"].startswith("nonlocal@"))]
    if not rows:
        return []
    lines = ["| retrain budget | nonlocal video top-1 (%) | training seeds | std (points) |",
             "|---|---:|---:|---:|"]
    for e in rows:
        ep = e.get("epochs") or epochs
        acc = f"{e['mean']:.1f}" if "mean" in e else "—"
        std = f"{e['std']:.1f}" if e.get("n", 0) > 1 else "—"
        lines.append(f"| {ep} epochs | {acc} | {e['n']} | {std} |")
    lines += ["", "Target: a budget whose training-seed std of `nonlocal` is ≤ 4 points.", ""]
    return lines
