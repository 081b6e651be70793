"""``perturb_factors``: the perturbation of ``perturb``, one factor at a time. Remove every
op of one family from the node's mixture, then the other family, keep the family whose
removal hurts most, restrict the node to it, and do the same for the dimension, then the
activation; the node's input as ``perturb``. Removing 12 or 4 ops at once moves the loss
far more than removing one op of 24, so each decision has more power, and a node needs 9
scores (+3 references) instead of 24. Removing half of a uniform mixture doubles the weight
of the other half, so the rule also measures how the supernet depends on the mixture as a
whole (docs/search.md); kept for studies, not the default."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from supernet.cells import ArchParameters
from supernet.space import FACTORS, OPS

from ..scoring import SelectionData, measure, paired
from .base import Decision, register_rule
from .perturb import Perturb

__all__ = ["PerturbFactors"]


@register_rule("perturb_factors")
class PerturbFactors(Perturb):
    """``perturb`` by factor values (family, dimension, activation) for the op."""

    score_label = "validation-loss increase when a factor value is removed"
    op_scores = sum(len(v) for v in FACTORS.values())

    def decide_op(self, model: nn.Module, arch: ArchParameters, node: int,
                  data: SelectionData, allowed: list[int], tick: Callable[[], None]
                  ) -> tuple[int, list[Decision]]:
        """For each factor, remove all the still-allowed ops with one value at a time,
        keep the value whose removal raises the validation loss most, restrict the node to
        it and re-measure the reference; returns the op and one decision per factor."""
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
            decisions.append(Decision(node, factor, best, runner, margin, ci, significant,
                                      scores))
            allowed = [o for o in allowed if OPS[o][f] == best]
            arch.restrict(node, ops=allowed)
            if len(allowed) > 1:
                base = measure(model, data)
        return allowed[0], decisions
