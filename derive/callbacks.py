"""Lightning callback that keeps the search's current result on disk.

At the end of each training epoch (rank 0 only) it appends softmax(alpha) and the input
weights to ``<run>/arch.csv`` and draws ``<run>/alpha.png`` (heat map + alpha over
epochs); with a rule that reads only alpha/beta (``argmax``) it also writes
``<run>/genotype.json`` and ``<run>/genotype.png`` (the cell) every epoch, so an
interrupted search still leaves its latest discrete cell behind. At the end of ``fit`` it
runs the module's selection rule (:mod:`derive.rules`; ``perturb`` / ``alone`` score on
validation batches) and writes the final genotype, its picture and ``<run>/selection.png``
(every decision with its margin). All files are written atomically.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from supernet.rng import run_seed
from supernet.search import SELECTION_OPTIONS, SearchModule, check_selection_options

from .draw import draw_cell, plot_alpha, write_arch_csv_row
from .genotype import Genotype, save_genotype
from .rules import check_rule, get_rule
from .select import Selection, report_from_dict, select_cell, selection_data
from .selection_plot import plot_selection

__all__ = ["GenotypeWriter", "run_dir", "genotype_from_module", "final_genotype",
           "select_from_module", "reselect"]


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
    hp = module.hparams
    provenance = {
        "run": run,
        "epoch": epoch,
        "dataset": dataset,
        "seed": run_seed(None),
        "backbone": hp.backbone,
        "supernet": hp.strategy,
        "arch_order": hp.arch_order,
        "remedy": hp.anti_collapse,
    }
    return Genotype.from_arch(module.arch, **module.cell_config(), provenance=provenance)


def _finetune(module: pl.LightningModule, datamodule: Any) -> Any:
    """``callable(steps)``: AdamW weight steps (lr = the search's final lr, at least 1e-4)
    on the training half, for fine-tuning between selection decisions."""
    state: dict[str, Any] = {}

    def run(steps: int) -> None:
        model = module.model
        if "opt" not in state:
            lr = max(float(module.hparams.lr_min), 1e-4)
            state["opt"] = torch.optim.AdamW(model.weight_parameters(), lr=lr)
            train = datamodule.train_dataloader()
            state["loader"] = train["weights"] if isinstance(train, dict) else train
            state["it"] = iter(state["loader"])
        model.train()
        for _ in range(steps):
            try:
                batch = next(state["it"])
            except StopIteration:
                state["it"] = iter(state["loader"])
                batch = next(state["it"])
            loss = torch.nn.functional.cross_entropy(model(batch["video"]), batch["label"])
            state["opt"].zero_grad(set_to_none=True)
            loss.backward()
            state["opt"].step()
        model.eval()

    return run


def select_from_module(module: pl.LightningModule, datamodule: Any = None,
                       progress: Any = None) -> Selection:
    """Run a :class:`supernet.search.SearchModule`'s selection rule (``hparams.select``)
    on its supernet; data-driven rules take their batches from ``datamodule``."""
    hp = module.hparams
    rule = hp.select
    data = None
    if get_rule(rule).needs_data:
        if datamodule is None:
            raise ValueError(f"selection rule {rule!r} needs validation data: no datamodule")
        steps = int(hp.select_finetune_steps)
        data = selection_data(datamodule, int(hp.select_val_batches),
                              int(hp.select_calib_batches), seed=run_seed(),
                              finetune=_finetune(module, datamodule) if steps else None,
                              finetune_steps=steps, bn=str(hp.select_bn))
        dev = next(module.parameters()).device
        data.val = [(v.to(dev), y.to(dev)) for v, y in data.val]
        data.calib = [v.to(dev) for v in data.calib]
    clip = tuple(data.val[0][0].shape[2:]) if data is not None and data.val else None
    if module.clip is None and clip is not None:
        module.clip = tuple(int(v) for v in clip)
    budget = module.cost_budget(clip) if hp.cost_target is not None else None
    return select_cell(module.model, rule, data, progress=progress, budget=budget)


def cell_cost_record(module: pl.LightningModule, nodes: list, inner_ratio: float
                     ) -> dict[str, Any] | None:
    """The cost of a derived cell where it was searched (backbone, positions, clip):
    MACs and params of all its inserted copies per clip, next to the non-local blocks'
    (None when the clip shape is unknown)."""
    if module.clip is None:
        return None
    space = module.space_cost()
    ops = [n[0] for n in nodes]
    table = space.at(inner_ratio, len(ops))  # a budget may have dropped trailing nodes
    nonlocal_cost = space.block("nonlocal")
    return {"backbone": space.backbone, "clip": list(space.clip),
            "positions": [list(s) for s in space.shapes], "inner_ratio": inner_ratio,
            "macs": table.macs(ops), "params": table.params(ops),
            "nonlocal_macs": nonlocal_cost["macs"], "nonlocal_params": nonlocal_cost["params"]}


def final_genotype(module: pl.LightningModule, datamodule: Any, epoch: int,
                   run: str | None = None, dataset: str | None = None,
                   progress: Any = None) -> Genotype:
    """The search's result: the module's selection rule applied to its supernet.

    Returns a :class:`Genotype` whose ``provenance["selection"]`` records every decision
    (choice, runner-up, margin, 95 % CI, significant) -- see :mod:`derive.select`.
    """
    selection = select_from_module(module, datamodule, progress=progress)
    genotype = genotype_from_module(module, epoch, run, dataset)
    genotype.nodes = list(selection.nodes)
    genotype.provenance["select"] = selection.rule
    genotype.provenance["selection"] = selection.to_dict()
    if selection.budget is not None:  # the budget sets the cell's width
        genotype.inner_ratio = float(selection.budget["inner_ratio"])
        genotype.provenance["search_inner_ratio"] = module.hparams.inner_ratio
    cost = cell_cost_record(module, genotype.nodes, genotype.inner_ratio)
    if cost is not None:
        genotype.provenance["cost"] = cost
    return Genotype(nodes=genotype.nodes, inner_ratio=genotype.inner_ratio,
                    kv_pool=genotype.kv_pool, position=genotype.position,
                    provenance=genotype.provenance)


def reselect(checkpoint: str | Path, rule: str | None = None, epoch: int | None = None,
             options: dict | None = None,
             datamodule: Callable[[SearchModule], Any] | None = None, seed: int | None = None,
             run: str | None = None, dataset: str | None = None) -> Genotype:
    """Run a selection rule on the supernet of a search checkpoint: the one re-selection
    path of ``attnas derive`` (:func:`derive.checkpoint.select_from_checkpoint`) and the
    benchmarks' re-select jobs.

    Args:
        checkpoint: the search's checkpoint (e.g. ``last.ckpt``); an old one is migrated
            when loaded (:meth:`supernet.search.SearchModule.on_load_checkpoint`).
        rule: the selection rule (a name of :mod:`derive.rules`; default: the run's own).
        epoch: the checkpoint's training epoch, for the provenance (default: read from it).
        options: selection settings to use instead of the run's (``select_val_batches``,
            ``select_calib_batches``, ``select_finetune_steps``, ``select_bn``,
            ``cost_target``, ``cost_min_width``); they do not change the supernet.
        datamodule: called with the loaded module (it may set its clip or check its
            budget); returns the validation data of a rule that needs data, or None.
        seed: seeds everything just before selecting, where given.
        run, dataset: the provenance's run folder and dataset.

    Returns:
        The genotype, with ``provenance["checkpoint"]``.

    Raises:
        ValueError: an unknown rule or option, in one line listing what is accepted.
    """
    settings = dict(options or {})
    unknown = sorted(set(settings) - set(SELECTION_OPTIONS))
    if unknown:
        raise ValueError(f"unknown selection option(s) {', '.join(unknown)}; accepted: "
                         f"{', '.join(SELECTION_OPTIONS)}")
    if rule is not None:
        settings["select"] = check_rule(rule)
    module = SearchModule.load_from_checkpoint(checkpoint, map_location="cpu")
    merged = {k: module.hparams[k] for k in SELECTION_OPTIONS} | settings
    check_selection_options(**merged)
    check_rule(merged["select"])
    module.hparams.update(merged)
    dm = datamodule(module) if datamodule is not None else None
    if seed is not None:
        pl.seed_everything(seed, verbose=False)
    if epoch is None:
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
        epoch = int(ckpt.get("epoch") or 0)
    genotype = final_genotype(module, dm, epoch, run, dataset)
    genotype.provenance["checkpoint"] = str(checkpoint)
    return genotype


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
        if self.draw:
            plot_alpha(out / "arch.csv", out / "alpha.png")
        if get_rule(pl_module.hparams.select).needs_data:
            return  # the genotype comes from the data-driven selection at the end of fit
        genotype = genotype_from_module(pl_module, epoch, str(out), _dataset_name(trainer))
        save_genotype(genotype, out / "genotype.json")
        if self.draw:
            draw_cell(genotype, out / "genotype.png", title=f"epoch {epoch}")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.current_epoch == 0:
            return
        out = run_dir(trainer)
        if not trainer.is_global_zero:
            return
        epoch = trainer.current_epoch - 1
        with _all_cores():
            genotype = final_genotype(pl_module, trainer.datamodule, epoch, str(out),
                                      _dataset_name(trainer), progress=_printer())
        save_genotype(genotype, out / "genotype.json")
        selection = genotype.provenance["selection"]
        if self.draw:
            draw_cell(genotype, out / "genotype.png",
                      title=f"epoch {epoch}, {selection['rule']}")
            _plot_selection(selection, out / "selection.png")
        print(_report(genotype))
        decided = [d for d in selection.get("decisions", []) if d.get("runner_up")]
        if decided and all(d.get("significant") is False for d in decided):
            acc = trainer.callback_metrics.get("val/acc")
            print("[select] warning: every decision is a coin toss: the supernet has not "
                  "learned enough to choose"
                  + (f" (val acc {float(acc):.3f})" if acc is not None else "")
                  + "; search longer or check the data", flush=True)


@contextlib.contextmanager
def _all_cores() -> Any:
    """Selection is pure compute (its batches are taken before it starts, the loader
    workers are idle): use every core for it unless OMP_NUM_THREADS pins the thread count
    (``attnas demo`` trains with half the cores to leave the rest to decoding)."""
    before = torch.get_num_threads()
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(before, len(os.sched_getaffinity(0))))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _plot_selection(selection: dict, path: Path) -> None:
    plot_selection(selection, path)


def _report(genotype: Genotype) -> str:
    return genotype.summary() + "\n" + report_from_dict(genotype.provenance["selection"])


def _printer() -> Any:
    """A progress callable that prints one line per node decision (no bar: it runs
    after the trainer's bar has closed)."""
    last: dict[str, str] = {}

    def progress(done: int, total: int, what: str) -> None:
        if last.get("what") != what:
            last["what"] = what
            print(f"[select] {what} ({done}/{total} scores)", flush=True)

    return progress
