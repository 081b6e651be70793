"""What the selection rules score on, and the statistics of a decision.

Scores are per-clip cross-entropies on a fixed list of validation batches (so two
candidates are compared on the same clips); the margin of a winner over its runner-up is
the mean of the paired per-clip differences with a 95 % normal confidence interval. Before
every score BatchNorm is either recalibrated on training batches or normalises each
validation batch by its own statistics (:data:`BN_MODES`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from supernet.cells import BN_MODES, check_bn_mode, recalibrate_batchnorm

__all__ = ["SelectionData", "BN_MODES", "check_bn_mode", "clip_losses", "clip_outputs",
           "paired",
           "measure", "prefix_inputs", "take_batches", "selection_data", "Batch", "restored"]

#: per-clip losses are clipped here (a diverging candidate must not produce inf/NaN stats)
_LOSS_CAP = 50.0
_Z95 = 1.959964

Batch = tuple[Tensor, Tensor]  # video (N, 3, T, H, W), label (N,)

@dataclass
class SelectionData:
    """What a data-driven rule scores on.

    Args:
        val: validation batches ``(video (N, 3, T, H, W), label (N,))``, scored every time.
        calib: training batches that recompute BatchNorm statistics before each score
            (empty: keep the statistics the supernet has).
        finetune: optional ``callable(steps)`` that trains the weights of the current
            (partly pinned) supernet for a few steps after each decision.
        finetune_steps: steps per decision (0: no fine-tuning).
        bn: how BatchNorm normalises while scoring: ``recalibrate`` (running statistics
            recomputed on ``calib`` before each score, then eval mode) or ``batch`` (each
            validation batch is normalised by its own statistics, as in training; the
            running statistics are not touched and ``calib`` is not needed).
    """

    val: list[Batch]
    calib: list[Tensor]
    finetune: Callable[[int], None] | None = None
    finetune_steps: int = 0
    bn: str = "recalibrate"
    #: the validation batches' inputs of the model's first inserted block, computed once
    #: (see :func:`measure`); with the id of the model they belong to
    prefix: list[Tensor] | None = field(default=None, repr=False)
    prefix_of: int | None = field(default=None, repr=False)



#: the most memory the cached block inputs of the validation batches may take
PREFIX_CACHE_BYTES = 1 << 30


@contextlib.contextmanager
def _scoring(model: nn.Module, batch_stats: bool) -> Any:
    """Eval mode, with BatchNorm on each batch's own statistics when ``batch_stats`` (train
    mode with momentum 0: the running statistics stay as they are); restored after."""
    model.eval()
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    if batch_stats:
        for m in bns:
            m.train()
            m.momentum = 0.0
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        model.eval()


def clip_losses(model: nn.Module, batches: Sequence[Batch], batch_stats: bool = False,
                prefix: Sequence[Tensor] | None = None) -> Tensor:
    """Per-clip cross-entropy ``(sum N,)`` float64 of ``model`` in eval mode; non-finite
    or huge values are capped at 50 (a diverging candidate scores badly, not NaN).
    ``batch_stats``: BatchNorm layers normalise each batch by its own statistics (train
    mode with momentum 0, so the running statistics stay as they are). ``prefix``: each
    batch's input of the model's first inserted block (:func:`prefix_inputs`); the
    forward then starts there (``model.forward_suffix``) with the same result."""
    with _scoring(model, batch_stats):
        if prefix is None:
            out = [F.cross_entropy(model(v).double(), y, reduction="none") for v, y in batches]
        else:
            out = [F.cross_entropy(model.forward_suffix(h).double(), y, reduction="none")
                   for h, (_, y) in zip(prefix, batches)]
    losses = torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)
    return torch.nan_to_num(losses, nan=_LOSS_CAP, posinf=_LOSS_CAP).clamp(max=_LOSS_CAP)


def clip_outputs(model: nn.Module, batches: Sequence[Batch], batch_stats: bool = False
                 ) -> tuple[Tensor, Tensor]:
    """Per-clip cross-entropy (capped as :func:`clip_losses`) and correctness: two
    ``(sum N,)`` tensors, float64 and bool, of ``model`` in eval mode."""
    losses, correct = [], []
    with _scoring(model, batch_stats):
        for v, y in batches:
            logits = model(v).double()
            losses.append(F.cross_entropy(logits, y, reduction="none"))
            correct.append(logits.argmax(1) == y)
    if not losses:
        return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.bool)
    loss = torch.nan_to_num(torch.cat(losses), nan=_LOSS_CAP, posinf=_LOSS_CAP)
    return loss.clamp(max=_LOSS_CAP), torch.cat(correct)


def prefix_inputs(model: nn.Module, batches: Sequence[Batch], batch_stats: bool
                  ) -> list[Tensor] | None:
    """Each batch's input of the first inserted block of ``model`` (its
    ``forward_prefix``), or None when the model cannot be split there or the inputs
    would take more than :data:`PREFIX_CACHE_BYTES`. Selection only changes the inserted
    blocks, so everything before the first one is the same for every candidate: computed
    once, it saves that part of every score (about half of the proxy supernet's forward)."""
    split = getattr(model, "split_point", None)
    if split is None or split() is None or not batches:
        return None
    out: list[Tensor] = []
    with _scoring(model, batch_stats):
        for i, (v, _) in enumerate(batches):
            out.append(model.forward_prefix(v))
            if i == 0 and out[0].numel() * out[0].element_size() * len(batches) > \
                    PREFIX_CACHE_BYTES:
                return None
    return out


def paired(diff: Tensor) -> tuple[float, tuple[float, float], bool]:
    """Mean of paired differences, its 95 % interval, and whether it excludes 0."""
    n = diff.numel()
    mean = float(diff.mean())
    sd = float(diff.std(unbiased=True)) if n > 1 else 0.0
    half = _Z95 * sd / math.sqrt(max(n, 1))
    ci = (mean - half, mean + half)
    return mean, ci, ci[0] > 0.0


def measure(model: nn.Module, data: SelectionData) -> Tensor:
    """Per-clip validation losses of the supernet as it is restricted now. With
    BatchNorm on batch statistics and no fine-tuning between decisions, nothing before
    the first inserted block changes from one score to the next: its output is computed
    once per model (:func:`prefix_inputs`) and every score runs only the rest."""
    if data.bn == "batch":
        if data.finetune is None or data.finetune_steps == 0:
            if data.prefix_of != id(model):
                data.prefix = prefix_inputs(model, data.val, batch_stats=True)
                data.prefix_of = id(model)
            return clip_losses(model, data.val, batch_stats=True, prefix=data.prefix)
        return clip_losses(model, data.val, batch_stats=True)
    recalibrate_batchnorm(model, data.calib)
    return clip_losses(model, data.val)



def take_batches(loader: Iterable, count: int, key: str | None = None) -> list[Any]:
    """The first ``count`` batches of ``loader`` as ``(video, label)`` pairs (``key``: the
    half of a search batch dict to use)."""
    out: list[Any] = []
    if count <= 0:
        return out
    for batch in loader:
        if key is not None and isinstance(batch, dict) and key in batch:
            batch = batch[key]
        out.append((batch["video"], batch["label"]))
        if len(out) >= count:
            break
    return out


def selection_data(datamodule: Any, val_batches: int, calib_batches: int, seed: int = 0,
                   finetune: Callable[[int], None] | None = None,
                   finetune_steps: int = 0, bn: str = "recalibrate") -> SelectionData:
    """Fixed validation / calibration batches from a :class:`datamodules.VideoDataModule`:
    the first ``val_batches`` validation batches (in order) and ``calib_batches`` batches
    of the training (``weights``) half, drawn under a private RNG seeded by ``seed`` so
    the same run selects the same way and the global RNG is left alone.

    Raises:
        ValueError: the datamodule has no validation set.
    """
    val_loader = datamodule.val_dataloader()
    if val_loader is None or val_loader == []:
        raise ValueError("selection needs validation data, and the datamodule has no "
                         "validation set (give --data.val_list, or a folder with a val split)")
    val = take_batches(val_loader, val_batches)
    if not val:
        raise ValueError("selection needs validation data, and the validation loader is empty")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        train = datamodule.train_dataloader()
        if isinstance(train, dict):  # search mode: {"weights": loader, "arch": loader}
            train = train["weights"]
        calib = [v for v, _ in take_batches(train, calib_batches, key="weights")]
    return SelectionData(val=val, calib=calib if bn == "recalibrate" else [],
                         finetune=finetune, finetune_steps=finetune_steps, bn=check_bn_mode(bn))


@contextlib.contextmanager
def restored(model: nn.Module, save: Callable[[], Any], restore: Callable[[Any], None]
             ) -> Any:
    """Run a selection on ``model`` and put back what it changes: the restrictions
    (``save()`` / ``restore(saved)``), the BatchNorm statistics and train/eval mode."""
    saved = save()
    saved_bn = {k: v.clone() for k, v in model.state_dict().items()
                if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    was_training = model.training
    try:
        yield
    finally:
        restore(saved)
        with contextlib.suppress(RuntimeError):
            model.load_state_dict(saved_bn, strict=False)
        model.train(was_training)
