"""Lightning callback that keeps the search's current result on disk, every epoch.

At the end of each training epoch (rank 0 only) it appends softmax(alpha) and the input
weights to ``<run>/arch.csv``, and writes ``<run>/genotype.json``, ``<run>/genotype.png``
(the cell) and ``<run>/alpha.png`` (heat map + alpha over epochs) -- all atomically, so an
interrupted or crashed search still leaves its latest discrete cell behind.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytorch_lightning as pl

from .draw import draw_cell, plot_alpha, write_arch_csv_row
from .genotype import Genotype, save_genotype

__all__ = ["GenotypeWriter", "run_dir"]


def run_dir(trainer: pl.Trainer) -> Path:
    """The run folder: the logger's versioned folder, else ``default_root_dir``."""
    path = trainer.log_dir or trainer.default_root_dir
    return Path(path)


def _dataset_name(trainer: pl.Trainer) -> str | None:
    dm = getattr(trainer, "datamodule", None)
    for attr in ("root", "train_list"):
        value = getattr(dm, attr, None)
        if value:
            return str(value)
    return None


def genotype_from_module(module: pl.LightningModule, epoch: int, run: str | None = None,
                         dataset: str | None = None) -> Genotype:
    """Discretise a :class:`supernet.search.SearchModule`'s alpha/beta into a genotype."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    provenance = {
        "run": run,
        "epoch": epoch,
        "dataset": dataset,
        "seed": int(seed) if seed is not None else None,
        "backbone": module.hparams.get("backbone"),
        "arch_order": module.hparams.get("arch_order"),
        "remedy": module.hparams.get("remedy"),
    }
    return Genotype.from_arch(module.arch, **module.cell_config(), provenance=provenance)


class GenotypeWriter(pl.Callback):
    """Write arch.csv, genotype.json, genotype.png and alpha.png into the run folder.

    Args:
        draw: also draw the pictures (the JSON and CSV are always written).
    """

    def __init__(self, draw: bool = True) -> None:
        self.draw = draw

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        out = run_dir(trainer)  # a collective under DDP: every rank must ask
        if not trainer.is_global_zero:
            return
        out.mkdir(parents=True, exist_ok=True)
        epoch = trainer.current_epoch
        arch = pl_module.arch
        write_arch_csv_row(out / "arch.csv", epoch, arch.op_weights().detach().cpu(),
                           arch.input_weights().detach().cpu())
        genotype = genotype_from_module(pl_module, epoch, str(out), _dataset_name(trainer))
        save_genotype(genotype, out / "genotype.json")
        if self.draw:
            draw_cell(genotype, out / "genotype.png", title=f"epoch {epoch}")
            plot_alpha(out / "arch.csv", out / "alpha.png")
