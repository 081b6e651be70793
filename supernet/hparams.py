"""Bounds of training hyper-parameters, checked when a module is built: a negative
learning rate is refused in one line before anything is written (it used to pass until
the optimizer was built, after the run folder, ``classes.json`` and ``config.yaml``)."""

from __future__ import annotations

import math

__all__ = ["check_fraction", "check_nonnegative", "check_positive"]


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
