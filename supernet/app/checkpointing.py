"""The run's checkpoint callback: ``last.ckpt`` always holds the newest weights.

Lightning 2.6's :class:`~pytorch_lightning.callbacks.ModelCheckpoint` rewrites
``last.ckpt`` only at a step where it also saved a top-k checkpoint. A retrain monitors
``val/top1``, so after an epoch that did not improve, ``last.ckpt`` stayed a copy of
``best.ckpt``: the final weights were in neither file, a resume repeated epochs and
``retrain test --ckpt_path last.ckpt`` scored old weights. :class:`RunCheckpoint` is the
same callback with three changes:

* ``last.ckpt`` is written at the end of every epoch (where the top-k checkpoint would be),
  improved or not;
* every checkpoint file is written atomically (a temporary file renamed into place), so a
  kill during a save never leaves a torn ``last.ckpt``;
* no ``-v1`` copies: a resumed run that repeats an epoch its killed run had already
  checkpointed replaces that epoch's file (the run reads as one run).
"""

from __future__ import annotations

import os
from typing import Any
from weakref import proxy

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

__all__ = ["RunCheckpoint"]


class RunCheckpoint(ModelCheckpoint):
    """:class:`~pytorch_lightning.callbacks.ModelCheckpoint` (same arguments; the version
    counter is off) whose ``last.ckpt`` is rewritten every epoch; see the module
    docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("enable_version_counter", False)
        super().__init__(*args, **kwargs)
        self._last_written_step = -1

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        """Lightning's save, through a temporary file renamed into place (rank 0)."""
        tmp = f"{filepath}.tmp"
        trainer.save_checkpoint(tmp, self.save_weights_only)  # every rank; rank 0 writes
        if trainer.is_global_zero and os.path.exists(tmp):
            os.replace(tmp, filepath)
        trainer.strategy.barrier("RunCheckpoint.rename")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        if self.save_last:
            self._last_written_step = trainer.global_step

    def _ensure_last(self, trainer: pl.Trainer) -> None:
        if (not self.save_last or trainer.sanity_checking or trainer.fast_dev_run
                or trainer.state.fn != "fit" or self._last_written_step == trainer.global_step
                or self._every_n_epochs < 1
                or (trainer.current_epoch + 1) % self._every_n_epochs):
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Lightning's epoch-end save, then ``last.ckpt`` if it was not rewritten."""
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._ensure_last(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Lightning's validation-end save, then ``last.ckpt`` if it was not rewritten."""
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._ensure_last(trainer)
