"""``attnas search [fit|validate] -c configs/search/synthetic.yaml [--key value ...]``."""

from __future__ import annotations


def trainer_defaults(root: str = "runs") -> dict:
    """Search defaults: CSV logs and checkpoints under ``runs/search/version_N``, rich bar."""
    return {
        "logger": {"class_path": "pytorch_lightning.loggers.CSVLogger",
                   "init_args": {"save_dir": root, "name": "search"}},
        "callbacks": [
            {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
             "init_args": {"save_last": True, "save_top_k": -1, "every_n_epochs": 1,
                           "filename": "epoch{epoch:02d}", "auto_insert_metric_name": False}},
            {"class_path": "pytorch_lightning.callbacks.RichProgressBar"},
        ],
        "max_epochs": 10,
        "log_every_n_steps": 10,
        "num_sanity_val_steps": 0,
    }


def main(argv: list[str]) -> int:
    """Entry point of ``attnas search``."""
    from derive.callbacks import GenotypeWriter

    from .lightning_cli import run
    from .search import SearchModule

    return run("search", SearchModule, argv, trainer_defaults(), [GenotypeWriter()])
