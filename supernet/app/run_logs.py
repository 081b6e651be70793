"""The run folder's CSV logger: a resumed run continues its own folder and records.

Lightning's :class:`~pytorch_lightning.loggers.CSVLogger` opens a new ``version_N`` for a
resumed run (so ``metrics.csv``, ``arch.csv`` and ``alpha.png`` of the resumed part lack
the earlier epochs), and pointed at the old folder it deletes the existing
``metrics.csv`` at once. :class:`RunLogger` is the same logger with two changes:

* :meth:`RunLogger.continue_run` points it at the folder a checkpoint came from
  (``<save_dir>/<name>/version_N/checkpoints/*.ckpt`` -> ``version_N``);
* its writer never deletes ``metrics.csv``: it appends, keeping the header's columns
  (new columns rewrite the file with every old row kept);
* :meth:`RunLogger.trim_to` drops the rows a killed or interrupted run logged after the
  checkpoint a resume starts from (they are logged again), so a resumed run's
  ``metrics.csv`` has one row per epoch and stage, as if it had never stopped.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import torch
from lightning_fabric.loggers.logger import rank_zero_experiment
from lightning_fabric.utilities.rank_zero import rank_zero_only
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from datamodules.atomic import atomic_write_text

__all__ = ["RunLogger", "run_folder_of"]


class _AppendingWriter(ExperimentWriter):
    """An experiment writer that continues an existing ``metrics.csv``."""

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir=log_dir)
        path = Path(self.metrics_file_path)
        if path.is_file():
            with path.open(newline="") as fh:
                header = next(csv.reader(fh), None)
            self.metrics_keys = sorted(header or [])

    def _check_log_dir_exists(self) -> None:  # never delete a record
        return


class RunLogger(CSVLogger):
    """:class:`~pytorch_lightning.loggers.CSVLogger` (same arguments) whose resumed runs
    continue their own folder; see the module docstring."""

    def continue_run(self, checkpoint: str | Path) -> bool:
        """Log into the folder ``checkpoint`` was written in, if it is one of this
        logger's run folders and no version was given. Returns whether it does."""
        if self._version is not None or self._experiment is not None:
            return False
        folder = run_folder_of(checkpoint)
        if folder is None or folder.parent.resolve() != Path(self.root_dir).resolve():
            return False
        self._version = folder.name
        return True

    def trim_to(self, checkpoint: str | Path) -> int:
        """Drop the rows of this run's ``metrics.csv`` logged after ``checkpoint`` was
        saved: a row of a later epoch, or of a step at or after the checkpoint's
        ``global_step``. Rank 0 rewrites the file atomically; returns the rows dropped."""
        if rank_zero_only.rank != 0:
            return 0
        path = Path(self.log_dir) / ExperimentWriter.NAME_METRICS_FILE
        if not path.is_file():
            return 0
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
        epoch, step = int(ckpt.get("epoch", -1)), int(ckpt.get("global_step", 0))
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            header, rows = list(reader.fieldnames or []), list(reader)

        def later(row: dict) -> bool:
            e, s = row.get("epoch") or "", row.get("step") or ""
            return (e != "" and int(float(e)) > epoch) or (s != "" and int(float(s)) >= step)

        keep = [r for r in rows if not later(r)]
        if len(keep) == len(rows):
            return 0
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=header)  # Lightning's dialect
        writer.writeheader()
        writer.writerows(keep)
        atomic_write_text(path, buf.getvalue(), newline="")
        return len(rows) - len(keep)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:  # noqa: D102
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def run_folder_of(checkpoint: str | Path) -> Path | None:
    """``.../version_N`` for ``.../version_N/checkpoints/x.ckpt``, else None."""
    p = Path(checkpoint).resolve()
    if p.parent.name == "checkpoints" and p.parent.parent.name.startswith("version_"):
        return p.parent.parent
    return None
