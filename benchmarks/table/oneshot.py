"""``attnas table score-supernet``: does a trained supernet rank cells as training does?

A search checkpoint's supernet gives every tabled cell with its number of nodes a one-shot
estimate (:mod:`derive.oneshot`: the supernet restricted to the cell, BatchNorm
recalibrated, scored on the task's validation clips); the estimates are ranked against the
table's mean test accuracies with Kendall's tau and Spearman's rho. The table is read for
scoring only: nothing here feeds back into a search.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from derive.checkpoint import genotype_from_checkpoint
from derive.oneshot import OneShot, kendall_tau, oneshot_estimates, spearman_rho
from derive.scoring import SelectionData, check_bn_mode
from supernet.search import SearchModule

from .cells import TableCell, parse_cell
from .protocol import clips_to_tensor
from .store import TABLE_DIR, Table
from .tasks import DATA_ROOT, TaskData, load_task_data

__all__ = ["SupernetScore", "score_supernet", "task_selection_data"]


@dataclass
class SupernetScore:
    """Per-cell one-shot estimates beside the table, and the rank correlations (the
    estimate ranked is ``-loss``; ``tau_acc`` ranks the one-shot accuracy instead)."""

    task: str
    checkpoint: str
    cells: list[str]
    estimates: list[OneShot]
    table_means: list[float]
    tau: float
    rho: float
    tau_acc: float
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"task": self.task, "checkpoint": self.checkpoint, "tau": self.tau,
                "rho": self.rho, "tau_acc": self.tau_acc, "n": len(self.cells),
                "settings": self.settings,
                "cells": [{"key": k, "oneshot_loss": e.loss, "oneshot_acc": e.acc,
                           "table_test": m}
                          for k, e, m in zip(self.cells, self.estimates, self.table_means)]}


def _clips(x: np.ndarray, num_frames: int, rate: int) -> np.ndarray:
    span = num_frames * rate
    if x.shape[1] < span:
        raise ValueError(f"the supernet was searched on {num_frames} frames x rate {rate} "
                         f"but the task's clips have {x.shape[1]} frames")
    return x[:, :span:rate]


def task_selection_data(data: TaskData, num_frames: int, rate: int, val_batches: int,
                        calib_batches: int, batch_size: int, bn: str = "recalibrate",
                        seed: int = 0) -> SelectionData:
    """Fixed validation batches (the first clips of the val split, in order) and random
    calibration batches of the train split, shaped as the supernet's search clips."""
    xv, yv = data.split("val")
    xt, _ = data.split("train")
    n_val = min(len(yv), val_batches * batch_size)
    val = []
    for start in range(0, n_val, batch_size):
        idx = np.arange(start, min(start + batch_size, n_val))
        clips = _clips(xv[idx], num_frames, rate)
        val.append((clips_to_tensor(clips, np.arange(len(idx))), torch.from_numpy(yv[idx])))
    rng = np.random.default_rng(seed)
    calib = []
    for _ in range(calib_batches if bn == "recalibrate" else 0):
        idx = np.sort(rng.choice(len(xt), batch_size, replace=False))
        clips = _clips(xt[idx], num_frames, rate)
        calib.append(clips_to_tensor(clips, np.arange(len(idx))))
    return SelectionData(val=val, calib=calib, bn=check_bn_mode(bn))


def score_supernet(checkpoint: str | Path, task: str, root: str | Path = TABLE_DIR,
                   data_root: str | Path = DATA_ROOT, val_batches: int = 8,
                   calib_batches: int = 4, batch_size: int = 32, bn: str = "recalibrate",
                   progress: Callable[[int, int], None] | None = None) -> SupernetScore:
    """One-shot estimates of every tabled cell the supernet can represent, and tau / rho.

    Raises:
        ValueError / FileNotFoundError: not a search checkpoint, no table for ``task``, no
            tabled cell with the supernet's number of nodes (one-line messages).
    """
    check_bn_mode(bn)
    table = Table.load(task, root)
    genotype, _ = genotype_from_checkpoint(checkpoint)  # validates the checkpoint's kind
    k = genotype.num_nodes
    stats = table.stats()
    cells: list[TableCell] = [parse_cell(key) for key, s in sorted(stats.items())
                              if s.nodes == k]
    if len(cells) < 2:
        raise ValueError(f"the {task!r} table holds {len(cells)} cells of {k} nodes (the "
                         f"supernet's); tau needs at least 2")
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    dm = dict(ckpt.get("datamodule_hyper_parameters") or {})
    num_frames, rate = int(dm.get("num_frames", 32)), int(dm.get("sampling_rate", 1))
    module = SearchModule.load_from_checkpoint(checkpoint, map_location="cpu")
    model = module.model
    data = load_task_data(table.variant, data_root)
    sel = task_selection_data(data, num_frames, rate, val_batches, calib_batches, batch_size,
                              bn)
    estimates = oneshot_estimates(model, [c.genotype.nodes for c in cells], sel, progress)
    means = [stats[c.key].test_mean for c in cells]
    score = [-e.loss for e in estimates]
    settings = {"num_nodes": k, "position": genotype.position, "val_clips":
                sum(len(y) for _, y in sel.val), "calib_batches": len(sel.calib), "bn": bn,
                "num_frames": num_frames, "sampling_rate": rate,
                "table_cells_position": cells[0].genotype.position}
    return SupernetScore(task, str(checkpoint), [c.key for c in cells], estimates, means,
                         kendall_tau(score, means), spearman_rho(score, means),
                         kendall_tau([e.acc for e in estimates], means), settings)
