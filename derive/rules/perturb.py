"""``perturb`` (the default): perturbation-based selection after DARTS-PT (Wang et al.,
ICLR 2021). For node 0, 1, ... in turn, remove each still-allowed candidate op from the
node's mixture, measure the validation loss, keep the op whose removal hurts most, pin it,
and decide the node's input the same way; optionally fine-tune; go to the next node."""

from __future__ import annotations

from .base import ScoringRule, register_rule

__all__ = ["Perturb"]


@register_rule("perturb")
class Perturb(ScoringRule):
    """Keep the candidate whose removal raises the validation loss most."""

    score_label = "validation-loss increase when removed"
