"""Bounds of training hyper-parameters, checked when a module is built: a negative
learning rate is refused in one line before anything is written (it used to pass until
the optimizer was built, after the run folder, ``classes.json`` and ``config.yaml``)."""

from __future__ import annotations

import math
import warnings
from typing import Any

__all__ = ["check_fraction", "check_nonnegative", "check_positive", "RENAMED_OPTIONS",
           "RENAMED_BACKBONE_KWARGS", "deprecation_line", "rename_options",
           "renamed_argument", "rename_backbone_kwargs", "deprecated_key_line",
           "parse_gmacs"]


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def check_positive(**named: object) -> None:
    """``ValueError`` unless every value is a finite number > 0."""
    for name, value in named.items():
        if not _number(name, value) > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")


def check_nonnegative(**named: object) -> None:
    """``ValueError`` unless every value is a finite number >= 0."""
    for name, value in named.items():
        if not _number(name, value) >= 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")


def check_fraction(**named: object) -> None:
    """``ValueError`` unless every value is a finite number in [0, 1)."""
    for name, value in named.items():
        if not 0 <= _number(name, value) < 1:
            raise ValueError(f"{name} must be in [0, 1), got {value!r}")


#: search options renamed in 0.x (old name -> new name); the old names are still accepted
#: for one release (:func:`rename_options`, the CLI warns) and renamed when a checkpoint
#: saved with them is loaded (:func:`supernet.search.migrate_hparams`)
RENAMED_OPTIONS: dict[str, str] = {
    "position": "position_encoding",
    "supernet": "strategy",
    "remedy": "anti_collapse",
    "remedy_weight": "anti_collapse_weight",
}


#: backbone keyword arguments renamed in 0.x (old name -> new name): SlowFast's ``alpha``
#: (the fast / slow frame ratio, not the architecture weights) is ``frame_ratio``. The old
#: name is still accepted for one release, with a ``DeprecationWarning``
#: (:func:`renamed_argument`; the CLI prints one warning line)
RENAMED_BACKBONE_KWARGS: dict[str, str] = {"alpha": "frame_ratio"}


def deprecation_line(old: str, new: str, prefix: str = "--model.") -> str:
    """The one-line warning for a renamed option."""
    return (f"warning: {prefix}{old} is deprecated and will be removed in the next release; "
            f"use {prefix}{new}")


def rename_options(options: dict, renamed: dict[str, str] | None = None) -> list[str]:
    """Rename the old keys of ``options`` in place (:data:`RENAMED_OPTIONS`); returns the
    old names found. ``ValueError`` when an old key and its new key are both given with
    different values."""
    found = []
    for old, new in (RENAMED_OPTIONS if renamed is None else renamed).items():
        if old not in options:
            continue
        value = options.pop(old)
        if new in options and options[new] != value:
            raise ValueError(f"{old} (deprecated) and {new} are both given, with different "
                             f"values ({value!r}, {options[new]!r}); give {new} only")
        options[new] = value
        found.append(old)
    return found


def deprecated_key_line(old: str, new: str, option: str) -> str:
    """The one-line warning for a key of a JSON option (e.g. ``--model.backbone_kwargs``)
    given under its old name."""
    return (f"warning: {option} key {old} is deprecated and will be removed in the next "
            f"release; use {new}")


def rename_backbone_kwargs(kwargs: Any) -> list[str]:
    """Rename in place the keys of the dict ``kwargs`` given under an old name
    (:data:`RENAMED_BACKBONE_KWARGS`), unless the new key is also given (the backbone then
    refuses the two); returns the old names found (none for anything but a dict)."""
    if not isinstance(kwargs, dict):
        return []
    found = [old for old in RENAMED_BACKBONE_KWARGS if old in kwargs]
    for old in found:
        if RENAMED_BACKBONE_KWARGS[old] not in kwargs:
            kwargs[RENAMED_BACKBONE_KWARGS[old]] = kwargs.pop(old)
    return found


def renamed_argument(owner: str, old: str, new: str, old_value: Any, new_value: Any,
                     new_default: Any) -> Any:
    """The value of an argument given under its old name ``old`` (not None), with a
    ``DeprecationWarning`` naming ``new``. ``ValueError`` when ``new`` was also given (a
    value other than its default ``new_default``) and differs."""
    if new_value != new_default and new_value != old_value:
        raise ValueError(f"{owner}: {old} (deprecated) and {new} are both given, with "
                         f"different values ({old_value!r}, {new_value!r}); give {new} only")
    warnings.warn(f"{owner}: {old} is deprecated and will be removed in the next release; "
                  f"use {new}", DeprecationWarning, stacklevel=3)
    return old_value


def parse_gmacs(target: Any, forms: str) -> float | None:
    """A cost target given as a number of GMACs (a number, or a string that is one), or
    None for another string; ``ValueError`` (naming ``forms``) for a bool, zero, a negative
    or a non-finite number."""
    if isinstance(target, bool):
        raise ValueError(f"cost target {target!r}: expected {forms}")
    if isinstance(target, str):
        try:
            value = float(target.strip())
        except ValueError:
            return None
    elif isinstance(target, (int, float)):
        value = float(target)
    else:
        raise ValueError(f"cost target {target!r}: expected {forms}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"cost target {target!r} must be > 0: expected {forms}")
    return value
