"""``attnas retrain fit|validate|test -c configs/retrain/synthetic.yaml [--key value ...]``."""

from __future__ import annotations

from pytorch_lightning.callbacks import LearningRateMonitor

from datamodules import BrokenVideoMonitor
from supernet.retrain import VideoClassifier

from .checkpointing import RunCheckpoint
from .lightning_cli import run


def trainer_defaults(root: str = "runs") -> dict:
    """Retrain defaults: CSV logs and checkpoints under ``runs/retrain/version_N``."""
    return {
        "logger": {"class_path": "supernet.app.run_logs.RunLogger",
                   "init_args": {"save_dir": root, "name": "retrain"}},
        "callbacks": [
            BrokenVideoMonitor(),
            RunCheckpoint(save_last=True, monitor="val/top1", mode="max", filename="best",
                          auto_insert_metric_name=False),
            LearningRateMonitor(),
        ],
        "max_epochs": 10,
        "log_every_n_steps": 10,
        "num_sanity_val_steps": 0,
    }


def main(argv: list[str]) -> int:
    """Entry point of ``attnas retrain``."""
    return run("retrain", VideoClassifier, argv, trainer_defaults())
