"""The selection-rule registry and what the rules share.

A rule is a small class, one per file in this package, registered by name with
:func:`register_rule`; :func:`derive.select.select_cell` looks ``--model.select`` /
``attnas derive --select`` up with :func:`get_rule` and calls :meth:`SelectionRule.select`.
A rule says what its scores mean (:attr:`~SelectionRule.score_label`), whether it reads
validation data (:attr:`~SelectionRule.needs_data`) and whether it scores a candidate by
removing it from the mixture or by keeping it alone (:attr:`~SelectionRule.removes`; the
two-stream selection reads that too). Data-driven rules subclass :class:`ScoringRule`,
which runs the node-by-node loop (decide the op, pin it, decide the input, pin it,
fine-tune) and scores candidates with :func:`score_candidates`; a rule overrides only the
decision that differs.

Adding a rule is adding a file: every module of this package is imported when the package
is, and its ``@register_rule("name")`` class becomes a value of ``--model.select``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple, TypeVar

from torch import Tensor, nn

from datamodules.registry import Registry
from supernet.cells import ArchParameters, NodeSpec
from supernet.space import FACTORS, NUM_OPS, OP_NAMES, OPS

from ..scoring import SelectionData, measure, paired

__all__ = ["Decision", "SelectionRule", "ScoringRule", "register_rule", "get_rule",
           "rule_names", "check_rule", "score_candidates", "input_names", "Tick", "AllowedOps"]

#: ``tick(what)`` -> a callable to call after each score of the decision named ``what``
Tick = Callable[[str], Callable[[], None]]
#: ``allowed_ops(chosen)``: the op indices the next node may take, given the ops chosen so far
AllowedOps = Callable[[list[int]], list[int]]

_REGISTRY: Registry[SelectionRule] = Registry("selection rule")
R = TypeVar("R", bound="type[SelectionRule]")


def input_names(node: int) -> list[str]:
    """Names of the inputs node ``node`` may read: ``input``, ``node 0``, ..."""
    return ["input"] + [f"node {j}" for j in range(node)]


def _r(x: float) -> float:
    return round(float(x), 6)


class Decision(NamedTuple):
    """One choice of a selection: an op or an input of one node.

    ``scores`` maps every candidate that was scored to its score (higher is better);
    ``margin`` is winner minus runner-up, ``ci`` its 95 % interval over the validation
    clips (None for argmax), ``significant`` whether ``ci`` excludes 0 (for argmax:
    whether the winner's weight is clearly above uniform).
    """

    node: int
    what: str  # "op" | "input" | a factor (perturb_factors) | a two-stream variable
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


class SelectionRule:
    """How a trained supernet becomes a node list (subclass and register to add one)."""

    #: the name ``--model.select`` selects it by (set by :func:`register_rule`)
    name: ClassVar[str] = ""
    #: what a score means, as the selection record and the report say it
    score_label: ClassVar[str] = ""
    #: the unit of a margin in the report (``loss`` or ``weight``)
    unit: ClassVar[str] = "loss"
    #: whether the rule scores on validation batches (else it reads alpha/beta only)
    needs_data: ClassVar[bool] = True
    #: scoring a candidate by removing it from the mixture (True) or keeping it alone
    removes: ClassVar[bool] = True

    def total_scores(self, num_nodes: int) -> int:
        """How many scores a cell of ``num_nodes`` nodes takes (for progress)."""
        return 0

    def select(self, model: nn.Module, arch: ArchParameters, data: SelectionData | None,
               allowed_ops: AllowedOps, tick: Tick) -> tuple[list[NodeSpec], list[Decision]]:
        """Decide every node of ``arch``.

        Args:
            model: the supernet, ``(N, 3, T, H, W) -> logits (N, classes)``, whose cells
                share ``arch``.
            arch: its :class:`~supernet.cells.ArchParameters` (alpha ``(K, NUM_OPS)``, beta).
            data: the validation / calibration batches (None for a rule without data).
            allowed_ops: the ops a node may take given those chosen before (a budget).
            tick: progress, see :data:`Tick`.

        Returns:
            ``(nodes, decisions)``: K :class:`NodeSpec` and every :class:`Decision`.
        """
        raise NotImplementedError


def score_candidates(model: nn.Module, arch: ArchParameters, node: int, what: str,
                     allowed: list[int], data: SelectionData, tick: Callable[[], None],
                     removal: bool) -> tuple[int, Decision]:
    """Score every allowed candidate (op indices, or input indices) of one node: with
    ``removal``, the validation-loss increase when the candidate is removed from the
    node's mixture (DARTS-PT); else minus the validation loss with the candidate alone.

    Returns:
        ``(best candidate, its Decision)``: the margin over the runner-up is paired over
        the validation clips; an op decision also records the margin of each factor.
    """
    names = list(OP_NAMES) if what == "op" else input_names(node)
    if len(allowed) == 1:  # nothing to choose (e.g. a budget left one candidate)
        return allowed[0], Decision(node, what, names[allowed[0]], None, 0.0, None, None,
                                    {names[allowed[0]]: 0.0})

    def restrict(choice: list[int]) -> None:
        if what == "op":
            arch.restrict(node, ops=choice)
        else:
            arch.restrict(node, inputs=choice)

    base = measure(model, data) if removal else None
    losses: dict[int, Tensor] = {}
    for c in allowed:
        restrict([o for o in allowed if o != c] if removal else [c])
        losses[c] = measure(model, data)
        tick()
    restrict(allowed)
    if removal:
        scores = {c: float((losses[c] - base).mean()) for c in allowed}
    else:
        scores = {c: -float(losses[c].mean()) for c in allowed}
    order = sorted(allowed, key=lambda c: (-scores[c], c))
    best, runner = order[0], order[1]

    def margin_of(a: int, b: int) -> tuple[float, tuple[float, float], bool]:
        """Margin of candidate a over b (positive: a is better), paired over the clips."""
        return paired(losses[a] - losses[b] if removal else losses[b] - losses[a])

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


class ScoringRule(SelectionRule):
    """A data-driven rule: node 0, 1, ... in turn, decide the op (:meth:`decide_op`), pin
    it, decide the input (:meth:`decide_input`), pin it, and fine-tune the partly pinned
    supernet if ``data.finetune_steps``; candidates are scored by :func:`score_candidates`
    (by removal when :attr:`removes`, else alone)."""

    #: scores per node's op decision (for progress)
    op_scores: ClassVar[int] = NUM_OPS

    def total_scores(self, num_nodes: int) -> int:
        """Op scores of every node plus input scores of nodes 1.. (node 0 reads the input)."""
        return num_nodes * self.op_scores + sum(range(2, num_nodes + 1))

    def decide_op(self, model: nn.Module, arch: ArchParameters, node: int,
                  data: SelectionData, allowed: list[int], tick: Callable[[], None]
                  ) -> tuple[int, list[Decision]]:
        """The op of ``node`` among ``allowed`` (op indices): ``(op, decisions)``."""
        op, decision = score_candidates(model, arch, node, "op", allowed, data, tick,
                                        self.removes)
        return op, [decision]

    def decide_input(self, model: nn.Module, arch: ArchParameters, node: int,
                     data: SelectionData, tick: Callable[[], None]) -> tuple[int, Decision]:
        """The input of ``node`` (>= 1) among ``0..node``: ``(input, decision)``."""
        return score_candidates(model, arch, node, "input", list(range(node + 1)), data,
                                tick, self.removes)

    def select(self, model: nn.Module, arch: ArchParameters, data: SelectionData | None,
               allowed_ops: AllowedOps, tick: Tick) -> tuple[list[NodeSpec], list[Decision]]:
        """The node-by-node loop (see the class docstring); ``data`` is required."""
        assert data is not None
        nodes: list[NodeSpec] = []
        decisions: list[Decision] = []
        arch.clear_restrictions()
        for k in range(arch.num_nodes):
            ops_ok = allowed_ops([OP_NAMES.index(n.op) for n in nodes])
            op, d_ops = self.decide_op(model, arch, k, data, ops_ok, tick(f"node {k} op"))
            decisions.extend(d_ops)
            arch.restrict(k, ops=[op])
            if k == 0:
                inp = 0
                decisions.append(Decision(0, "input", "input", None, 0.0, None, None,
                                          {"input": 0.0}))
            else:
                inp, d_in = self.decide_input(model, arch, k, data, tick(f"node {k} input"))
                decisions.append(d_in)
            arch.restrict(k, inputs=[inp])
            nodes.append(NodeSpec(OP_NAMES[op], inp))
            if data.finetune is not None and data.finetune_steps > 0 \
                    and k < arch.num_nodes - 1:
                data.finetune(data.finetune_steps)
        return nodes, decisions


def register_rule(name: str) -> Callable[[R], R]:
    """Class decorator: register a :class:`SelectionRule` subclass under ``name``."""
    return _REGISTRY.register(name)


def rule_names() -> tuple[str, ...]:
    """The registered rule names (``alone``, ``argmax``, ``perturb``, ...)."""
    return _REGISTRY.names()


def check_rule(rule: object) -> str:
    """Return ``rule`` if a rule is registered under it, else ``ValueError`` in one line
    listing the known names."""
    return _REGISTRY.check(rule)


def get_rule(rule: str) -> SelectionRule:
    """A new instance of the rule registered as ``rule`` (``ValueError`` listing the known
    names otherwise)."""
    return _REGISTRY.create(rule)
