"""``alone``: the candidate that does best as the node's only op (its inherited weights,
the undecided nodes still mixed), as single-path one-shot NAS scores paths; the node's
input likewise."""

from __future__ import annotations

from .base import ScoringRule, register_rule

__all__ = ["Alone"]


@register_rule("alone")
class Alone(ScoringRule):
    """Keep the candidate with the lowest validation loss when it is alone."""

    score_label = "minus validation loss when alone"
    removes = False
