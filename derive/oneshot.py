"""One-shot estimates: how good a trained supernet says a cell is, without training it.

The supernet is restricted to the cell (each node pinned to the cell's op and input; the
inherited weights are the supernet's), BatchNorm is recalibrated for that path (or
normalises each batch by its own statistics), and the cell is scored on fixed validation
batches. Comparing these estimates with trained accuracies (a ground-truth table) measures
whether a supernet can rank cells at all: Kendall's tau and Spearman's rho.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

from torch import nn

from supernet.cells import ArchParameters, NodeSpec, recalibrate_batchnorm

from .scoring import SelectionData, clip_outputs

__all__ = ["OneShot", "oneshot_estimate", "oneshot_estimates", "kendall_tau", "spearman_rho"]


class OneShot(NamedTuple):
    """A cell's one-shot estimate: mean validation cross-entropy and top-1 (0..1)."""

    loss: float
    acc: float


def _arch(model: nn.Module) -> ArchParameters:
    arch = getattr(model, "arch", None)
    if not isinstance(arch, ArchParameters):
        raise ValueError("one-shot estimates need a supernet (a backbone built with block "
                         "'search', which has .arch)")
    return arch


def oneshot_estimate(model: nn.Module, nodes: Sequence[NodeSpec], data: SelectionData
                     ) -> OneShot:
    """The estimate of one cell (``nodes``: its ``(op, input)`` list, as many nodes as the
    supernet's). The model's restrictions are restored afterwards; with ``data.bn ==
    "recalibrate"`` its BatchNorm statistics are those of this cell afterwards."""
    arch = _arch(model)
    saved = arch.restrictions()
    try:
        arch.pin(nodes)
        batch_stats = data.bn == "batch"
        if not batch_stats:
            recalibrate_batchnorm(model, data.calib)
        loss, correct = clip_outputs(model, data.val, batch_stats=batch_stats)
    finally:
        arch.set_restrictions(saved)
    return OneShot(float(loss.mean()), float(correct.double().mean()))


def oneshot_estimates(model: nn.Module, cells: Sequence[Sequence[NodeSpec]],
                      data: SelectionData,
                      progress: Callable[[int, int], None] | None = None) -> list[OneShot]:
    """:func:`oneshot_estimate` of every cell, on a copy of ``model`` (left untouched);
    ``progress(done, total)`` after each."""
    work = copy.deepcopy(model)
    out = []
    for i, nodes in enumerate(cells):
        out.append(oneshot_estimate(work, nodes, data))
        if progress is not None:
            progress(i + 1, len(cells))
    return out


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b of two equally long score lists (ties handled); NaN below 2."""
    if len(a) != len(b):
        raise ValueError(f"kendall_tau: lists of {len(a)} and {len(b)} scores")
    concordant = discordant = ties_a = ties_b = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_a) * (concordant + discordant + ties_b))
    return (concordant - discordant) / denom if denom else float("nan")


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2.0
        i = j + 1
    return ranks


def spearman_rho(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho (Pearson correlation of the ranks, ties averaged); NaN below 2."""
    if len(a) != len(b):
        raise ValueError(f"spearman_rho: lists of {len(a)} and {len(b)} scores")
    if len(a) < 2:
        return float("nan")
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = math.sqrt(sum((x - ma) ** 2 for x in ra))
    vb = math.sqrt(sum((y - mb) ** 2 for y in rb))
    return cov / (va * vb) if va and vb else float("nan")
