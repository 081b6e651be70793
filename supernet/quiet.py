"""Noise a run prints on every start that says nothing about this run, silenced in one
place for the ``attnas`` commands (each filter names exactly one message):

* Lightning's "Tip: ... litlogger" banner;
* ``isinstance(treespec, LeafSpec) is deprecated`` (Lightning's pytree shim on this torch;
  printed twice under DDP);
* ``The dirpath has changed ...`` when a checkpoint is tested or resumed from another
  folder (its bookkeeping of the best checkpoints does not apply there);

and a :class:`~datamodules.datasets.BrokenVideoWarning` is printed as one line
(``warning: skipping broken video ...``) instead of with the source line that raised it.
"""

from __future__ import annotations

import logging
import sys
import warnings

__all__ = ["quiet_lightning"]


class _DropTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.getMessage())


_installed = False


def quiet_lightning() -> None:
    """Install the filters above (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_DropTip())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r"The dirpath has changed from .*")
    from datamodules.datasets import BrokenVideoWarning

    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        if issubclass(category, BrokenVideoWarning):
            print(f"warning: {message}", file=file or sys.stderr, flush=True)
            return
        previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show
