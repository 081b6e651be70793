"""Noise a run prints on every start that says nothing about this run, silenced in one
place for the ``attnas`` commands (each filter names exactly one message):

* Lightning's "Tip: ... litlogger" banner, and its note that our model summary replaces
  its own (:class:`supernet.lightning_cli.RunSummary`, which drops the FLOPs column that
  reads 0);
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


#: Lightning info lines that describe Lightning, not the run
_NOISE = ("litlogger", "Skipping setting a default `ModelSummary`")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.getMessage())
        return not any(n in text for n in _NOISE)


_installed = False


def quiet_lightning() -> None:
    """Install the filters above (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_DropNoise())
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
