"""Selection rules, one small class per file, looked up by name (:func:`get_rule`). Adding
one is adding a file: every module here is imported with the package, and its
``@register_rule`` class joins the registry (see :mod:`.base`)."""

from __future__ import annotations

import importlib
import pkgutil

from .base import (
    Decision,
    ScoringRule,
    SelectionRule,
    check_rule,
    get_rule,
    input_names,
    register_rule,
    rule_names,
    score_candidates,
)

__all__ = ["Decision", "ScoringRule", "SelectionRule", "check_rule", "get_rule",
           "input_names", "register_rule", "rule_names", "score_candidates"]

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module != "base":
        importlib.import_module(f"{__name__}.{_module}")
