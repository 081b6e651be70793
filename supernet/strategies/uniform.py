"""``uniform``: alpha/beta frozen at exactly uniform; an iteration is one weight step on
the mixture of every candidate, each with the same weight (the ``arch`` half is unused).
The measured default: selection by perturbation does not need alpha to move."""

from __future__ import annotations

from .base import Strategy, register_strategy

__all__ = ["Uniform"]


@register_strategy("uniform")
class Uniform(Strategy):
    """Every candidate trained with the same weight; no architecture step (the base
    class's hooks as they are)."""
