"""``attnas search [fit|validate] -c configs/search/synthetic.yaml [--key value ...]``;
``attnas search twostream -c configs/search/twostream.yaml``: the two-stream search."""

from __future__ import annotations


def trainer_defaults(root: str = "runs") -> dict:
    """Search defaults: CSV logs, checkpoints and the per-epoch genotype under
    ``runs/search/version_N``."""
    from datamodules import BrokenVideoMonitor
    from derive.callbacks import GenotypeWriter

    from .checkpointing import RunCheckpoint
    from .threads import AllCoresOnceCached

    return {
        "logger": {"class_path": "supernet.run_logs.RunLogger",
                   "init_args": {"save_dir": root, "name": "search"}},
        "callbacks": [
            BrokenVideoMonitor(),
            RunCheckpoint(save_last=True, save_top_k=-1, every_n_epochs=1,
                            filename="epoch{epoch:02d}", auto_insert_metric_name=False),
            GenotypeWriter(),
            AllCoresOnceCached(),
        ],
        "max_epochs": 10,
        "log_every_n_steps": 10,
        "num_sanity_val_steps": 0,
    }


def main(argv: list[str]) -> int:
    """Entry point of ``attnas search`` (``attnas search twostream ...``: the progressive
    two-stream search, :mod:`supernet.twostream.cli`)."""
    if argv and argv[0] == "twostream":
        from .twostream.cli import main as twostream_main

        return twostream_main(argv[1:])
    from .lightning_cli import run
    from .search import SearchModule

    return run("search", SearchModule, argv, trainer_defaults())
