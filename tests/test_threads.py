"""AllCoresOnceCached: training gets every core once the clips come from the memory cache,
and the caller's thread count comes back after fit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from datamodules import VideoDataModule
from datamodules.synth import ensure_synthetic
from supernet.app.threads import AllCoresOnceCached


class _Probe(pl.LightningModule):
    """A linear classifier on mean-pooled clips that records torch's thread count."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)
        self.threads: dict[int, int] = {}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.threads[self.current_epoch] = torch.get_num_threads()
        x = batch["video"].mean(dim=(2, 3, 4))
        return torch.nn.functional.cross_entropy(self.fc(x), batch["label"])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 or "OMP_NUM_THREADS" in os.environ,
                    reason="needs 2 cores and no OMP_NUM_THREADS")
def test_all_cores_from_the_second_epoch_then_restored(tmp_path: Path) -> None:
    root = ensure_synthetic(tmp_path / "data", classes=2, videos_per_class=6, frames=4,
                            size=16, seed=1, workers=1)
    dm = VideoDataModule(root=str(root), num_frames=4, crop_size=16, batch_size=4,
                         num_workers=0, cache="memory")
    probe = _Probe()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = pl.Trainer(max_epochs=2, limit_train_batches=1, limit_val_batches=0,
                             logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False,
                             callbacks=[AllCoresOnceCached()])
        trainer.fit(probe, datamodule=dm)
        assert probe.threads == {0: 1, 1: len(os.sched_getaffinity(0))}
        assert torch.get_num_threads() == 1  # restored
    finally:
        torch.set_num_threads(before)
