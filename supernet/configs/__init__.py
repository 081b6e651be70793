"""The shipped LightningCLI configs (YAML), installed as package data.

They live here so that a non-editable ``pip install .`` carries them (``attnas demo`` reads
``search/synthetic.yaml``). In a checkout, ``configs/`` at the repository root is a link to
this folder, so ``attnas search fit -c configs/search/synthetic.yaml`` works as typed.
"""

from __future__ import annotations

import os
from pathlib import Path

#: the folder holding ``search/``, ``retrain/`` and ``trainer/``
ROOT = Path(__file__).resolve().parent

__all__ = ["ROOT", "path", "display"]


def path(name: str) -> Path:
    """The shipped config ``name``, e.g. ``path("search/synthetic.yaml")``."""
    return ROOT / name


def display(config: Path) -> str:
    """How to name ``config`` to a user: ``configs/<name>`` when the current folder's
    ``configs/`` is this folder (a checkout), else the absolute path (an installed copy)."""
    config = Path(config).resolve()
    try:
        name = config.relative_to(ROOT)
    except ValueError:
        return str(config)
    here = Path("configs")
    if here.is_dir() and os.path.samefile(here, ROOT):
        return str(here / name)
    return str(config)
