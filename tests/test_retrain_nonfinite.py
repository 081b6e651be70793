"""Non-finite outputs in retraining: a diverged training loss stops the run, while clips
whose logits overflow only in eval (BatchNorm running statistics) count as errors and are
reported, so one such batch cannot throw away a finished training run."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from supernet.retrain import VideoClassifier

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"widths": [8, 16, 32], "depths": [1, 1, 1], "stem_width": 8}


class _Items(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.video = torch.randn(n, 3, 4, 16, 16, generator=g)
        self.label = torch.arange(n) % 3

    def __len__(self) -> int:
        return len(self.label)

    def __getitem__(self, i: int) -> dict:
        return {"video": self.video[i], "label": self.label[i], "video_index": i}


class _OverflowsInEval(VideoClassifier):
    """The first clip of every eval batch has NaN logits (or every train clip, if asked)."""

    def __init__(self, *args, nan_in_train: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.nan_in_train = nan_in_train

    def forward(self, video: Tensor) -> Tensor:
        out = super().forward(video)
        if self.training and not self.nan_in_train:
            return out
        return torch.cat([torch.full_like(out[:1], float("nan")), out[1:]])


def _trainer(tmp_path) -> pl.Trainer:
    return pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=tmp_path)


def test_eval_overflow_counts_as_errors_and_is_logged(tmp_path) -> None:
    module = _OverflowsInEval(3, backbone_kwargs=TINY)
    loader = DataLoader(_Items(8), batch_size=4)
    trainer = _trainer(tmp_path)
    with pytest.warns(UserWarning, match="non-finite logits"):
        trainer.fit(module, loader, loader)
    metrics = trainer.callback_metrics
    assert float(metrics["val/nonfinite"]) == 2.0  # one clip in each of the two batches
    assert torch.isfinite(metrics["val/loss"])
    tested = trainer.test(module, loader, verbose=False)[0]
    assert tested["test/nonfinite"] == 2.0
    # the two NaN clips are wrong whatever the model learnt: at most 6 of 8 are right
    assert tested["test/top1"] <= 6 / 8 + 1e-6
    assert tested["test/video_top1"] <= 6 / 8 + 1e-6


def test_finite_runs_log_zero_nonfinite(tmp_path) -> None:
    module = VideoClassifier(3, backbone_kwargs=TINY)
    loader = DataLoader(_Items(4), batch_size=4)
    trainer = _trainer(tmp_path)
    trainer.fit(module, loader, loader)
    assert float(trainer.callback_metrics["val/nonfinite"]) == 0.0


def test_a_diverged_training_loss_still_stops_the_run(tmp_path) -> None:
    module = _OverflowsInEval(3, backbone_kwargs=TINY, nan_in_train=True)
    loader = DataLoader(_Items(4), batch_size=4)
    with pytest.raises(FloatingPointError, match="non-finite train loss"):
        _trainer(tmp_path).fit(module, loader, loader)
