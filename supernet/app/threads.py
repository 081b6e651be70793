"""Thread count of training while the data loader decodes, and after it stops.

``attnas demo`` trains with half the cores during the first epoch, leaving the rest to the
loader workers that decode the videos (on 2 cores, 2 compute threads plus a decoding
worker oversubscribe the CPU and torch's spinning threads slow down 5-10x). With the
``memory`` clip cache, the workers only hand out cached clips from the second epoch on:
:class:`AllCoresOnceCached` then gives training every core.
"""

from __future__ import annotations

import os

import pytorch_lightning as pl
import torch

__all__ = ["AllCoresOnceCached"]


class AllCoresOnceCached(pl.Callback):
    """From epoch 1, train with every available core when the datamodule caches decoded
    clips in memory; a no-op when ``OMP_NUM_THREADS`` pins the thread count or torch
    already uses every core."""

    def __init__(self) -> None:
        self._before: int | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch < 1 or "OMP_NUM_THREADS" in os.environ:
            return
        dm = trainer.datamodule
        if str(getattr(dm, "hparams", {}).get("cache", "none")) != "memory":
            return
        cores = len(os.sched_getaffinity(0))
        if torch.get_num_threads() < cores:
            self._before = self._before or torch.get_num_threads()
            torch.set_num_threads(cores)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._before is not None:  # the caller's thread count again
            torch.set_num_threads(self._before)
            self._before = None
