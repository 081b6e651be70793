"""Selection: how a trained supernet becomes a discrete cell. Every rule lives here.

Four rules, chosen by name (:data:`SELECTION_RULES`):

* ``argmax`` -- DARTS: the largest ``softmax(alpha)`` per node and the largest
  ``softmax(beta)`` input. Needs no data; meaningful only when alpha has moved. A decision
  whose winner is below :data:`ARGMAX_FLAT` times the uniform weight is flagged (a coin
  toss: with a few hundred Adam steps at the DARTS arch lr alpha stays within noise of
  uniform).
* ``perturb`` -- perturbation-based selection after DARTS-PT (Wang et al., ICLR 2021): for
  node 0, 1, ... in turn, remove each still-allowed candidate from the node's mixture,
  measure the validation loss, and keep the candidate whose removal hurts most; pin it and
  decide the node's input the same way; optionally fine-tune; go to the next node.
* ``perturb_factors`` -- the same perturbation, one factor at a time: remove every op of
  one family (then dimension, then activation) from the node's mixture, keep the value
  whose removal hurts most, restrict the node to it, go on with the next factor; the node's
  input as ``perturb``. Large removals give each decision more power than removing one op
  of 24, and a node needs 9 scores instead of 24.
* ``alone`` -- the candidate that does best when it is the node's only op (inherited
  weights, the other undecided nodes still mixed), as single-path one-shot NAS scores
  paths; inputs likewise.

BatchNorm while scoring (``select_bn``): ``recalibrate`` recomputes the running statistics
on a few training batches before every score (the statistics of a mixture are not those
of any single path; a supernet of ours showed a validation loss of 6e21 without this);
``batch`` normalises each validation batch with its own statistics (the benchmark's
default, after recalibrated uniform supernets still logged validation losses in the
hundreds). Scores are per-clip cross-entropies
on a fixed list of validation batches, so two candidates are compared on the same clips:
the margin of the winner over the runner-up is the mean of the paired per-clip
differences, with a 95 % normal confidence interval; a decision whose interval does not
exclude 0 is flagged ``significant: false`` -- a user can tell a choice from a coin toss.

Score convention: higher is better. ``perturb``: the validation-loss increase when the
candidate is removed; ``alone``: minus the validation loss with the candidate alone;
``argmax``: the softmax weight.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from supernet.cells import ArchParameters, NodeSpec, recalibrate_batchnorm
from supernet.costmodel import CellBudget
from supernet.space import FACTORS, NUM_OPS, OP_NAMES, OPS

from .scoring import (
    BN_MODES,
    SelectionData,
    check_bn_mode,
    clip_losses,
    measure,
    paired,
    selection_data,
    take_batches,
)

__all__ = ["SELECTION_RULES", "BN_MODES", "check_bn_mode", "ARGMAX_FLAT", "Decision",
           "Selection", "SelectionData",
           "check_rule", "select_cell", "recalibrate_batchnorm", "clip_losses",
           "input_names", "take_batches", "selection_data", "report_from_dict",
           "factor_summary"]

SELECTION_RULES: tuple[str, ...] = ("argmax", "perturb", "perturb_factors", "alone")
#: an argmax decision is flagged when its winner's weight is below this x uniform
ARGMAX_FLAT = 1.5
_SCORE_LABEL = {
    "argmax": "softmax weight",
    "perturb": "validation-loss increase when removed",
    "perturb_factors": "validation-loss increase when a factor value is removed",
    "alone": "minus validation loss when alone",
}


def check_rule(rule: str) -> str:
    """Return ``rule`` if it is a selection rule, else ``ValueError`` listing them."""
    if rule not in SELECTION_RULES:
        raise ValueError(f"unknown selection rule {rule!r}; accepted: "
                         f"{', '.join(SELECTION_RULES)}")
    return rule


def input_names(node: int) -> list[str]:
    """Names of the inputs node ``node`` may read: ``input``, ``node 0``, ..."""
    return ["input"] + [f"node {j}" for j in range(node)]


class Decision(NamedTuple):
    """One choice of a selection: an op or an input of one node.

    ``scores`` maps every candidate that was scored to its score (higher is better);
    ``margin`` is winner minus runner-up, ``ci`` its 95 % interval over the validation
    clips (None for argmax), ``significant`` whether ``ci`` excludes 0 (for argmax:
    whether the winner's weight is clearly above uniform).
    """

    node: int
    what: str  # "op" | "input"
    choice: str
    runner_up: str | None
    margin: float
    ci: tuple[float, float] | None
    significant: bool | None
    scores: dict[str, float]
    #: op decisions of data-driven rules: per factor (family, dimension, activation), the
    #: winner's value against the best candidate with another value, with the paired
    #: margin and its 95 % interval -- "dot, not map" can be clear when the exact op is not
    factors: dict[str, dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (as stored in a genotype's provenance)."""
        out = {"node": self.node, "what": self.what, "choice": self.choice,
               "runner_up": self.runner_up, "margin": _r(self.margin),
               "ci": None if self.ci is None else [_r(self.ci[0]), _r(self.ci[1])],
               "significant": self.significant,
               "scores": {k: _r(v) for k, v in self.scores.items()}}
        if self.factors is not None:
            out["factors"] = {f: {**v, "margin": _r(v["margin"]),
                                  "ci": [_r(v["ci"][0]), _r(v["ci"][1])]}
                              for f, v in self.factors.items()}
        return out


def selection_record(sel: Any) -> dict[str, Any]:
    """The fields every selection record has (a :class:`Selection` or a two-stream
    stage's): rule, what it scores, seconds, validation clips, BatchNorm mode, how many
    decisions were coin tosses, and the decisions."""
    return {"rule": sel.rule, "score": _SCORE_LABEL[sel.rule],
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
    unit = "weight" if rule == "argmax" else "loss"
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


def _r(x: float) -> float:
    return round(float(x), 6)



# ------------------------------------------------------------------------------ rules
def _argmax(arch: ArchParameters, allowed_ops: Callable[[list[int]], list[int]]
            ) -> tuple[list[NodeSpec], list[Decision]]:
    ops = arch.op_weights().detach().cpu()
    ins = arch.input_weights().detach().cpu()
    nodes, decisions = [], []
    for k in range(arch.num_nodes):
        admissible = set(allowed_ops([OP_NAMES.index(n.op) for n in nodes]))
        for what, w, names in (("op", ops[k], list(OP_NAMES)), ("input", ins[k, :k + 1],
                                                                input_names(k))):
            order = torch.argsort(w, descending=True).tolist()
            if what == "op":
                order = [o for o in order if o in admissible]
            best = order[0]
            runner = order[1] if len(order) > 1 else None
            margin = float(w[best] - w[runner]) if runner is not None else 0.0
            decisions.append(Decision(
                k, what, names[best], None if runner is None else names[runner], margin,
                None, None if runner is None else bool(w[best] >= ARGMAX_FLAT / len(names)),
                {names[i]: float(w[i]) for i in range(len(names))}))
        op_d, in_d = decisions[-2], decisions[-1]
        nodes.append(NodeSpec(op_d.choice, input_names(k).index(in_d.choice)))
    return nodes, decisions


def _select_by_factors(model: nn.Module, arch: ArchParameters, node: int,
                       data: SelectionData, tick: Callable[[], None], allowed: list[int]
                       ) -> tuple[int, list[Decision]]:
    """``perturb_factors`` for one node's op: family, then dimension, then activation.
    For each factor, remove all the still-allowed ops with one value at a time, keep the
    value whose removal raises the validation loss most, restrict the node to it, and
    re-measure the reference. Removing a whole family (12 ops) or dimension (4) moves the
    loss far more than removing one op of 24, so each decision has more power, and a node
    needs 9 scores (+3 references) instead of 24."""
    decisions: list[Decision] = []
    arch.restrict(node, ops=allowed)
    base = measure(model, data)
    for f, (factor, values) in enumerate(FACTORS.items()):
        present = [v for v in values if any(OPS[o][f] == v for o in allowed)]
        if len(present) < 2:
            continue
        losses: dict[str, Tensor] = {}
        for v in present:
            arch.restrict(node, ops=[o for o in allowed if OPS[o][f] != v])
            losses[v] = measure(model, data)
            tick()
        scores = {v: float((losses[v] - base).mean()) for v in present}
        order = sorted(present, key=lambda v: (-scores[v], present.index(v)))
        best, runner = order[0], order[1]
        margin, ci, significant = paired(losses[best] - losses[runner])
        decisions.append(Decision(node, factor, best, runner, margin, ci, significant, scores))
        allowed = [o for o in allowed if OPS[o][f] == best]
        arch.restrict(node, ops=allowed)
        if len(allowed) > 1:
            base = measure(model, data)
    return allowed[0], decisions


def _score_candidates(model: nn.Module, arch: ArchParameters, node: int, what: str,
                      allowed: list[int], rule: str, data: SelectionData,
                      tick: Callable[[], None]) -> tuple[int, Decision]:
    """Score every allowed candidate (op indices or input indices) of one node."""
    names = list(OP_NAMES) if what == "op" else input_names(node)
    if len(allowed) == 1:  # nothing to choose (e.g. a budget left one candidate)
        return allowed[0], Decision(node, what, names[allowed[0]], None, 0.0, None, None,
                                    {names[allowed[0]]: 0.0})

    def restrict(choice: list[int]) -> None:
        if what == "op":
            arch.restrict(node, ops=choice)
        else:
            arch.restrict(node, inputs=choice)

    base = measure(model, data) if rule == "perturb" else None
    losses: dict[int, Tensor] = {}
    for c in allowed:
        restrict([c] if rule == "alone" else [o for o in allowed if o != c])
        losses[c] = measure(model, data)
        tick()
    restrict(allowed)
    if rule == "perturb":
        scores = {c: float((losses[c] - base).mean()) for c in allowed}
    else:
        scores = {c: -float(losses[c].mean()) for c in allowed}
    order = sorted(allowed, key=lambda c: (-scores[c], c))
    best, runner = order[0], order[1]

    def margin_of(a: int, b: int) -> tuple[float, tuple[float, float], bool]:
        """Margin of candidate a over b (positive: a is better), paired over the clips."""
        return paired(losses[a] - losses[b] if rule == "perturb" else losses[b] - losses[a])

    margin, ci, significant = margin_of(best, runner)
    factors = None
    if what == "op":
        factors = {}
        for f, factor in enumerate(FACTORS):
            value = OPS[best][f]
            others = [c for c in order if OPS[c][f] != value]
            if not others:
                continue
            m, fci, sig = margin_of(best, others[0])
            factors[factor] = {"choice": value, "runner_up": OPS[others[0]][f],
                               "margin": m, "ci": fci, "significant": sig}
    return best, Decision(node, what, names[best], names[runner], margin, ci, significant,
                          {names[c]: scores[c] for c in allowed}, factors)


@contextlib.contextmanager
def _restored(model: nn.Module, save: Callable[[], Any], restore: Callable[[Any], None]
              ) -> Any:
    """Run a selection on ``model`` and put back what it changes: the restrictions
    (``save()`` / ``restore(saved)``), the BatchNorm statistics and train/eval mode."""
    saved = save()
    saved_bn = {k: v.clone() for k, v in model.state_dict().items()
                if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    was_training = model.training
    try:
        yield
    finally:
        restore(saved)
        with contextlib.suppress(RuntimeError):
            model.load_state_dict(saved_bn, strict=False)
        model.train(was_training)


def select_cell(model: nn.Module, rule: str, data: SelectionData | None = None,
                progress: Callable[[int, int, str], None] | None = None,
                budget: CellBudget | None = None) -> Selection:
    """Derive a cell from a supernet with ``rule``.

    Args:
        model: the supernet, ``(N, 3, T, H, W) -> logits``, with its shared
            :class:`~supernet.cells.ArchParameters` as ``model.arch``.
        rule: one of :data:`SELECTION_RULES`.
        data: validation / calibration batches (required by ``perturb`` and ``alone``).
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
    check_rule(rule)
    arch = getattr(model, "arch", None)
    if not isinstance(arch, ArchParameters):
        raise ValueError("selection needs a supernet with shared ArchParameters as .arch "
                         "(a search checkpoint's model)")
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

    def finish(nodes: list[NodeSpec], decisions: list[Decision], clips: int, bn: str
               ) -> Selection:
        record = None
        if budget is not None:
            kept, ratio, macs, params = budget.fit_size([n.op for n in nodes])
            record = {**budget.record(), "excluded": excluded, "inner_ratio": ratio,
                      "macs": macs, "params": params}
            if kept < len(nodes):  # the budget bought fewer, wider nodes
                record["dropped"] = [[n.op, n.input] for n in nodes[kept:]]
                nodes = nodes[:kept]
        return Selection(rule, nodes, decisions, time.perf_counter() - t0, clips, bn, record)

    if rule == "argmax":
        nodes, decisions = _argmax(arch, allowed_ops)
        return finish(nodes, decisions, 0, "")
    if data is None or not data.val:
        raise ValueError(f"selection rule {rule!r} scores on validation data, and none was "
                         f"given (the datamodule has no validation batches)")
    check_bn_mode(data.bn)
    k_nodes = arch.num_nodes
    per_node = sum(len(v) for v in FACTORS.values()) if rule == "perturb_factors" else NUM_OPS
    total = k_nodes * per_node + sum(range(2, k_nodes + 1))
    done = 0

    def tick(what: str) -> Callable[[], None]:
        def inner() -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(done, total, what)
        return inner

    nodes: list[NodeSpec] = []
    decisions: list[Decision] = []
    with _restored(model, arch.restrictions, arch.set_restrictions):
        arch.clear_restrictions()
        for k in range(k_nodes):
            ops_ok = allowed_ops([OP_NAMES.index(n.op) for n in nodes])
            if rule == "perturb_factors":
                op, d_ops = _select_by_factors(model, arch, k, data, tick(f"node {k} op"),
                                               ops_ok)
                decisions.extend(d_ops)
            else:
                op, d_op = _score_candidates(model, arch, k, "op", ops_ok,
                                             rule, data, tick(f"node {k} op"))
                decisions.append(d_op)
            arch.restrict(k, ops=[op])
            if k == 0:
                inp = 0
                decisions.append(Decision(0, "input", "input", None, 0.0, None, None,
                                          {"input": 0.0}))
            else:
                inp, d_in = _score_candidates(model, arch, k, "input", list(range(k + 1)),
                                              "alone" if rule == "alone" else "perturb", data,
                                              tick(f"node {k} input"))
                decisions.append(d_in)
            arch.restrict(k, inputs=[inp])
            nodes.append(NodeSpec(OP_NAMES[op], inp))
            if data.finetune is not None and data.finetune_steps > 0 and k < k_nodes - 1:
                data.finetune(data.finetune_steps)
    return finish(nodes, decisions, sum(int(y.numel()) for _, y in data.val), data.bn)
