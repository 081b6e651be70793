"""Training strategies of the supernet search, one small class per file, looked up by name
(:func:`get_strategy`). Adding one is adding a file: every module here is imported with the
package, and its ``@register_strategy`` class joins the registry (see :mod:`.base`)."""

from __future__ import annotations

import importlib
import pkgutil

from .base import Strategy, check_strategy, get_strategy, register_strategy, strategy_names

__all__ = ["Strategy", "check_strategy", "get_strategy", "register_strategy", "strategy_names"]

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module != "base":
        importlib.import_module(f"{__name__}.{_module}")
