"""Noise a run prints on every start that says nothing about this run, silenced in one
place for the ``attnas`` commands (each filter names exactly one message):

* Lightning's "Tip: ... litlogger" banner, and its note that our model summary replaces
  its own (:class:`supernet.app.lightning_cli.RunSummary`, which drops the FLOPs column that
  reads 0);
* ``isinstance(treespec, LeafSpec) is deprecated`` (Lightning's pytree shim on this torch;
  printed twice under DDP);
* ``The dirpath has changed ...`` when a checkpoint is tested or resumed from another
  folder (its bookkeeping of the best checkpoints does not apply there);

and a :class:`~datamodules.datasets.BrokenVideoWarning` or
:class:`~datamodules.labels.LabelWarning` is printed as one line
(``warning: skipping broken video ...``) instead of with the source line that raised it.

:class:`HeldBack` keeps Lightning's start-up lines (``Seed set to 0``, ``GPU available``,
...) while a command checks its input: a refusal is then the only line on stderr, and a
run that starts prints them as before.
"""

from __future__ import annotations

import logging
import sys
import warnings

from datamodules.datasets import BrokenVideoWarning
from datamodules.labels import LabelWarning

__all__ = ["HeldBack", "quiet_lightning"]


#: Lightning info lines that describe Lightning, not the run
_NOISE = ("litlogger", "Skipping setting a default `ModelSummary`")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.getMessage())
        return not any(n in text for n in _NOISE)


#: the loggers of Lightning's start-up lines
_STARTUP = ("lightning_fabric.utilities.seed", "lightning.fabric.utilities.seed",
            "pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero",
            "lightning_fabric.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class HeldBack(logging.Filter):
    """Hold Lightning's start-up log lines from :meth:`start` until :meth:`release` (they
    are printed then) or :meth:`drop` (they are not)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self._on = False

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: D102
        if self._on:
            self.records.append(record)
            return False
        return True

    def start(self) -> HeldBack:
        """Begin holding (idempotent); returns ``self``."""
        if not self._on:
            self._on = True
            for name in _STARTUP:
                logging.getLogger(name).addFilter(self)
        return self

    def _stop(self) -> list[logging.LogRecord]:
        self._on = False
        for name in _STARTUP:
            logging.getLogger(name).removeFilter(self)
        records, self.records = self.records, []
        return records

    def release(self) -> None:
        """Stop holding and print the held lines, in order."""
        for record in self._stop():
            logging.getLogger(record.name).handle(record)

    def drop(self) -> None:
        """Stop holding and forget the held lines."""
        self._stop()


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
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        if issubclass(category, (BrokenVideoWarning, LabelWarning)):
            print(f"warning: {message}", file=file or sys.stderr, flush=True)
            return
        previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show
