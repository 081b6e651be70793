"""Lightning callbacks of the data side.

:class:`BrokenVideoMonitor` logs, at the end of every training and validation epoch, how
many videos the datamodule has skipped as broken so far (``data/broken_videos``, the
maximum over ranks) and prints the new ones on rank 0. Add it to a LightningCLI config::

    trainer:
      callbacks:
        - class_path: datamodules.BrokenVideoMonitor
"""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info

__all__ = ["BrokenVideoMonitor"]


class BrokenVideoMonitor(pl.Callback):
    """Log the datamodule's broken-video count per epoch (needs a datamodule with
    ``failed_count()`` / ``failed_paths()``, as :class:`~datamodules.VideoDataModule`)."""

    def __init__(self) -> None:
        self._reported: set[str] = set()

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "failed_count"):
            return
        pl_module.log("data/broken_videos", float(dm.failed_count()), sync_dist=True,
                      reduce_fx="max", rank_zero_only=False)
        new = [p for p in dm.failed_paths() if p not in self._reported]
        if new:
            self._reported.update(new)
            rank_zero_info(f"{len(new)} broken video(s) skipped this epoch: "
                           + ", ".join(new[:10]) + (" ..." if len(new) > 10 else ""))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule
                                ) -> None:
        if not trainer.sanity_checking:
            self._log(trainer, pl_module)
