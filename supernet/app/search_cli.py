"""``attnas search [fit|validate] -c configs/search/synthetic.yaml [--key value ...]``;
``attnas search twostream -c configs/search/twostream.yaml``: the two-stream search."""

from __future__ import annotations

from datamodules import BrokenVideoMonitor
from derive.callbacks import GenotypeWriter
from supernet.search import SearchModule

from .checkpointing import RunCheckpoint
from .lightning_cli import run
from .threads import AllCoresOnceCached
from .twostream_cli import main as twostream_main


def trainer_defaults(root: str = "runs") -> dict:
    """Search defaults: CSV logs, checkpoints and the per-epoch genotype under
    ``runs/search/version_N``."""
    return {
        "logger": {"class_path": "supernet.app.run_logs.RunLogger",
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
    two-stream search, :mod:`supernet.app.twostream_cli`)."""
    if argv and argv[0] == "twostream":
        return twostream_main(argv[1:])
    return run("search", SearchModule, argv, trainer_defaults())
