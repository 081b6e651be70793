"""Selection: how a trained supernet becomes a discrete cell.

The rules are classes of :mod:`derive.rules`, one file each, looked up by name
(:data:`SELECTION_RULES`): ``perturb`` (the default; DARTS-PT's perturbation),
``perturb_factors`` (the same by factor value), ``alone`` (each candidate as the node's only
op) and ``argmax`` (round 1's DARTS rule, no data). :func:`select_cell` dispatches through
the registry and records the result as a :class:`Selection`.

BatchNorm while scoring (``select_bn``): ``recalibrate`` recomputes the running statistics
on a few training batches before every score (the statistics of a mixture are not those
of any single path; a supernet of ours showed a validation loss of 6e21 without this);
``batch`` normalises each validation batch with its own statistics (the default, after
recalibrated uniform supernets still logged validation losses in the hundreds). Scores are
per-clip cross-entropies on a fixed list of validation batches, so two candidates are
compared on the same clips: the margin of the winner over the runner-up is the mean of the
paired per-clip differences, with a 95 % normal confidence interval; a decision whose
interval does not exclude 0 is flagged ``significant: false`` -- a user can tell a choice
from a coin toss.

Score convention: higher is better. ``perturb``: the validation-loss increase when the
candidate is removed; ``alone``: minus the validation loss with the candidate alone;
``argmax``: the softmax weight.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from torch import nn

from supernet.cells import ArchParameters, NodeSpec, recalibrate_batchnorm
from supernet.costmodel import CellBudget
from supernet.space import FACTORS, NUM_OPS, OP_NAMES, OPS

from .rules import Decision, check_rule, get_rule, input_names, rule_names
from .rules.argmax import ARGMAX_FLAT
from .scoring import (
    BN_MODES,
    SelectionData,
    check_bn_mode,
    clip_losses,
    restored,
    selection_data,
    take_batches,
)

__all__ = ["SELECTION_RULES", "BN_MODES", "check_bn_mode", "ARGMAX_FLAT", "Decision",
           "Selection", "SelectionData", "check_rule", "get_rule", "score_label", "score_unit",
           "select_cell", "recalibrate_batchnorm", "clip_losses", "input_names",
           "take_batches", "selection_data", "selection_record", "report_from_dict",
           "factor_summary"]

#: the selection rules' names (:func:`derive.rules.rule_names`)
SELECTION_RULES: tuple[str, ...] = rule_names()


def score_label(rule: str) -> str:
    """What a score of ``rule`` means (as records and reports say it); ``?`` for a name
    no rule has (an old record)."""
    try:
        return get_rule(rule).score_label
    except ValueError:
        return "?"


def score_unit(rule: str) -> str:
    """The unit of ``rule``'s margins (``weight`` for a rule that reads alpha, else
    ``loss``; ``loss`` for a name no rule has)."""
    try:
        return get_rule(rule).unit
    except ValueError:
        return "loss"


def selection_record(sel: Any) -> dict[str, Any]:
    """The fields every selection record has (a :class:`Selection` or a two-stream
    stage's): rule, what it scores, seconds, validation clips, BatchNorm mode, how many
    decisions were coin tosses, and the decisions."""
    return {"rule": sel.rule, "score": score_label(sel.rule),
            "seconds": round(sel.seconds, 2), "clips": sel.clips, "bn": sel.bn,
            "flagged": len(sel.flagged), "decisions": [d.to_dict() for d in sel.decisions]}


class Selection(NamedTuple):
    """The result of a rule: the node list and every decision that led to it."""

    rule: str
    nodes: list[NodeSpec]
    decisions: list[Decision]
    seconds: float
    clips: int  # validation clips scored on (0 for argmax)
    bn: str = ""  # BatchNorm while scoring (see SelectionData.bn; "" for argmax)
    #: with a cost budget: the target, the ops each node could not take (``excluded``),
    #: the inner ratio the cell was fitted to and its MACs / params at the search's clip
    budget: dict[str, Any] | None = None

    @property
    def flagged(self) -> list[Decision]:
        """Decisions that are not clearly better than their runner-up."""
        return [d for d in self.decisions if d.significant is False]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record for ``provenance["selection"]``."""
        out = selection_record(self)
        if self.budget is not None:
            out["budget"] = self.budget
        return out

    def report(self) -> str:
        """Lines for the terminal: each decision, its margin, and the coin tosses."""
        return report_from_dict(self.to_dict())


def report_from_dict(selection: dict[str, Any]) -> str:
    """The terminal report of a selection record (``Selection.to_dict()``, as stored in a
    genotype's ``provenance["selection"]``): one line per decision with its margin and
    95 % interval, the winning value of each factor, and the decisions that are coin
    tosses."""
    rule = selection.get("rule", "?")
    unit = score_unit(rule)
    clips = selection.get("clips") or 0
    lines = [f"selection: {rule} ({selection.get('score', '')}"
             + (f", {clips} validation clips" if clips else "")
             + (f", BatchNorm {selection['bn']}" if selection.get("bn") else "")
             + f", {float(selection.get('seconds') or 0):.0f} s)"]
    decided = flagged = 0
    for d in selection.get("decisions", []):
        if d.get("runner_up") is None:
            continue
        decided += 1
        ci = d.get("ci")
        ci_txt = "" if ci is None else f" [95% CI {ci[0]:+.4f}, {ci[1]:+.4f}]"
        flag = ""
        if d.get("significant") is False:
            flagged += 1
            flag = "   <- not significant (coin toss)"
        lines.append(f"  node {d['node']} {d['what']:<5} {d['choice']:<27} over "
                     f"{d['runner_up']:<27} margin {d['margin']:+.4f} {unit}{ci_txt}{flag}")
        if d["what"] == "op" and d.get("factors"):
            lines.append("      by factor: " + ", ".join(
                f"{f} {v['choice']} over {v['runner_up']} {v['margin']:+.4f}"
                + ("" if v.get("significant") else " (coin toss)")
                for f, v in d["factors"].items()))
        elif d["what"] == "op":
            lines.append("      best by factor: " + factor_summary(d.get("scores", {})))
    lines.append(f"  {flagged} of {decided} decisions not significant" if flagged
                 else f"  all {decided} decisions significant")
    budget = selection.get("budget")
    if budget:
        lines.append(f"  budget {budget['target']} = {budget['target_macs'] / 1e6:.3f} MMACs: "
                     f"cell fitted to inner ratio {budget['inner_ratio']:g}, "
                     f"{budget['macs'] / 1e6:.3f} MMACs "
                     f"({budget['macs'] / budget['target_macs']:.0%} of the target), "
                     f"{budget['params']:,} params")
        if budget.get("dropped"):
            lines.append(f"  {len(budget['dropped'])} trailing node(s) dropped to keep the inner "
                         f"ratio >= {budget.get('min_width', 0):g}: "
                         + ", ".join(op for op, _ in budget["dropped"]))
        for node, ops in sorted(budget.get("excluded", {}).items(), key=lambda kv: int(kv[0])):
            lines.append(f"  node {node}: {len(ops)} op(s) excluded by the budget: "
                         + ", ".join(ops))
    return "\n".join(lines)


def factor_summary(scores: dict[str, float]) -> str:
    """For an op decision: the winning value of each factor and its lead, e.g.
    ``family dot (+0.21), dimension temporal (+0.05), activation softmax (+0.01)``
    (the best score among the ops with each value, compared with the next value's)."""
    parts = []
    for f, factor in enumerate(FACTORS):
        best: dict[str, float] = {}
        for name, s in scores.items():
            v = OPS[OP_NAMES.index(name)][f]
            best[v] = max(best.get(v, -math.inf), s)
        ranked = sorted(best.items(), key=lambda kv: -kv[1])
        lead = ranked[0][1] - ranked[1][1] if len(ranked) > 1 else 0.0
        parts.append(f"{factor} {ranked[0][0]} ({lead:+.3f})")
    return ", ".join(parts)


def select_cell(model: nn.Module, rule: str, data: SelectionData | None = None,
                progress: Callable[[int, int, str], None] | None = None,
                budget: CellBudget | None = None) -> Selection:
    """Derive a cell from a supernet with ``rule``, a rule of :mod:`derive.rules`.

    Args:
        model: the supernet, ``(N, 3, T, H, W) -> logits``, with its shared
            :class:`~supernet.cells.ArchParameters` as ``model.arch``.
        rule: one of :data:`SELECTION_RULES`.
        data: validation / calibration batches (required by a rule that
            ``needs_data``: every rule but ``argmax``).
        progress: optional ``callable(done, total, what)`` called after each score.
        budget: a :class:`~supernet.costmodel.CellBudget`: each node only takes ops that
            keep the cell within it (the others are listed as excluded), and the result's
            ``budget["inner_ratio"]`` is the widest inner ratio at which the cell fits.

    Returns:
        a :class:`Selection`. The model's restrictions, BatchNorm statistics and train/eval
        mode are restored on return (fine-tuning, if asked for, does change its weights).

    Raises:
        ValueError: unknown rule, a data-driven rule without validation batches, or a
            model without ``arch``.
    """
    chosen_rule = get_rule(rule)
    arch = getattr(model, "arch", None)
    if not isinstance(arch, ArchParameters):
        raise ValueError("selection needs a supernet with shared ArchParameters as .arch "
                         "(a search checkpoint's model)")
    if chosen_rule.needs_data:
        if data is None or not data.val:
            raise ValueError(f"selection rule {rule!r} scores on validation data, and none "
                             f"was given (the datamodule has no validation batches)")
        check_bn_mode(data.bn)
    else:
        data = None
    t0 = time.perf_counter()
    excluded: dict[str, list[str]] = {}

    def allowed_ops(chosen: list[int]) -> list[int]:
        every = list(range(NUM_OPS))
        if budget is None:
            return every
        ok = budget.admissible(chosen, every)
        if len(ok) < NUM_OPS:
            excluded[str(len(chosen))] = [OP_NAMES[o] for o in every if o not in ok]
        if not ok:  # cannot happen for a target checked against the cheapest cell
            raise ValueError(f"node {len(chosen)}: no operation keeps the cell within the "
                             f"budget of {budget.target / 1e6:.3f} MMACs")
        return ok

    total = chosen_rule.total_scores(arch.num_nodes)
    done = 0

    def tick(what: str) -> Callable[[], None]:
        def inner() -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(done, total, what)
        return inner

    with restored(model, arch.restrictions, arch.set_restrictions):
        nodes, decisions = chosen_rule.select(model, arch, data, allowed_ops, tick)
    record = None
    if budget is not None:
        kept, ratio, macs, params = budget.fit_size([n.op for n in nodes])
        record = {**budget.record(), "excluded": excluded, "inner_ratio": ratio,
                  "macs": macs, "params": params}
        if kept < len(nodes):  # the budget bought fewer, wider nodes
            record["dropped"] = [[n.op, n.input] for n in nodes[kept:]]
            nodes = nodes[:kept]
    clips = sum(int(y.numel()) for _, y in data.val) if data is not None else 0
    return Selection(rule, nodes, decisions, time.perf_counter() - t0, clips,
                     data.bn if data is not None else "", record)
