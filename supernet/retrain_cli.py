"""``attnas retrain fit|validate|test -c configs/retrain/synthetic.yaml [--key value ...]``."""

from __future__ import annotations


def trainer_defaults(root: str = "runs") -> dict:
    """Retrain defaults: CSV logs and checkpoints under ``runs/retrain/version_N``."""
    from pytorch_lightning.callbacks import LearningRateMonitor

    from datamodules import BrokenVideoMonitor

    from .checkpointing import RunCheckpoint

    return {
        "logger": {"class_path": "supernet.run_logs.RunLogger",
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
    from .lightning_cli import run
    from .retrain import VideoClassifier

    return run("retrain", VideoClassifier, argv, trainer_defaults())
