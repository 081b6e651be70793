"""The table protocol: one fixed, cheap recipe that trains a cell on a task.

The network is the proxy backbone (the search's own family) at the width the protocol
names, with the cell inserted at the proxy's default positions (after the last block of
res3 and of res4). The stem and the stages before ``train_from`` are a **fixed prefix**:
drawn once from ``prefix_seed``, their BatchNorm statistics calibrated on training clips,
the same for every cell and seed; their features are computed once per task and kept next
to the task's clips (:func:`prefix_features`), so a run trains only the cell and the stages
around it. Training: AdamW, linear warm-up then cosine decay to 0, gradient-norm clipping,
a fixed number of steps over shuffled epochs; a step whose loss or gradient is not finite is
skipped and counted. The final weights are scored on the validation split (what a search
may choose by) and on the test split (what the table reports), every clip whole.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from datamodules.atomic import atomic_save_npy
from supernet.backbones import proxy_presets
from supernet.counting import count_flops, count_params
from supernet.factory import create_backbone

from .cells import TableCell, parse_cell
from .tasks import SPLITS, TaskData

__all__ = ["Protocol", "RunRecord", "LATE_FIELDS", "build_model", "train_cell", "evaluate",
           "clips_to_tensor", "prefix_features", "split_point", "PROTOCOL_VERSION"]

#: bump when the training code changes what a protocol's numbers mean
PROTOCOL_VERSION = 2
#: fields added after tables were built, with the value those tables used: a fingerprint
#: leaves such a field out at that value, and a protocol file without it reads it so
LATE_FIELDS: dict[str, object] = {"prefix_steps": 0, "block_temporal_kernel": None,
                                  "prefix_warmup_steps": None}
_MEAN, _STD = 0.45, 0.225


@dataclass(frozen=True)
class Protocol:
    """A training recipe; its :meth:`fingerprint` stamps every table built with it.

    Attributes:
        steps: optimiser steps (batches) of training.
        batch_size: clips per step.
        frame_step: keep every ``frame_step``-th frame of each clip (from frame 0).
        lr: AdamW peak learning rate.
        warmup_steps: linear warm-up from 0 to ``lr``, then cosine decay to 0.
        weight_decay: AdamW weight decay.
        grad_clip: gradient-norm clipping (0 = off).
        widths, depths, stem_width, stem_kernel, dropout: the proxy backbone's.
        block_temporal_kernel: the temporal kernel of every block's first conv (``None``:
            the proxy's default, 3 in res2 and in res3's first block). 1 with a stem
            kernel ``(1, k, k)`` makes a C2D network: its convolutions never mix frames, so
            whatever relates frames is the cell's doing.
        positions: insertion preset of the proxy (``default``: after res3 and res4).
        train_from: where training starts; everything before it is the fixed prefix. A
            stage name (``res3``: the stem and res2 are fixed), ``cells`` (everything before
            the first inserted cell is fixed: with the default positions the stem, res2 and
            res3's blocks) or ``stem`` (train everything).
        prefix_seed: the seed that draws the fixed prefix's weights and calibration clips.
        prefix_steps: 0: the prefix keeps its drawn (random) weights; ``N > 0``: the prefix
            is that of the proxy without a cell (``none``) trained whole, from the stem, for
            ``N`` steps of this recipe from ``prefix_seed``.
        prefix_warmup_steps: the warm-up of that training (``None``: ``warmup_steps``), so
            that a longer recipe for the cells can keep the same prefix.
        calib_clips: training clips that calibrate the prefix's BatchNorm statistics.
        eval_batch: clips per evaluation batch (no effect on the numbers).
    """

    steps: int = 1000
    batch_size: int = 16
    frame_step: int = 2
    lr: float = 2e-3
    warmup_steps: int = 100
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    widths: tuple[int, ...] = (32, 64, 128)
    depths: tuple[int, ...] = (1, 1, 1)
    stem_width: int = 16
    stem_kernel: tuple[int, ...] = (1, 3, 3)
    block_temporal_kernel: int | None = 1
    dropout: float = 0.0
    positions: str = "default"
    train_from: str = "res3"
    prefix_seed: int = 0
    prefix_steps: int = 1600
    prefix_warmup_steps: int | None = None
    calib_clips: int = 1024
    eval_batch: int = 150

    def fingerprint(self) -> str:
        """12 hex digits that change with any field that changes the numbers."""
        fields = asdict(self)
        fields.pop("eval_batch")
        for late, before in LATE_FIELDS.items():
            if fields[late] == before:  # fields that came later: as tables before them did
                fields.pop(late)
        text = json.dumps({"version": PROTOCOL_VERSION, **fields}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def prefix_fingerprint(self) -> str:
        """12 hex digits that change with any field that changes the fixed prefix."""
        keys = ("frame_step", "widths", "depths", "stem_width", "stem_kernel", "train_from",
                "prefix_seed", "calib_clips")
        if self.block_temporal_kernel is not None:
            keys += ("block_temporal_kernel",)
        if self.prefix_steps:  # a trained prefix depends on the recipe that trained it
            keys += ("prefix_steps", "batch_size", "lr", "warmup_steps", "weight_decay",
                     "grad_clip", "dropout")
        fields = {k: getattr(self, k) for k in keys}
        if self.prefix_steps:
            fields["warmup_steps"] = self.prefix_warmup()
        text = json.dumps({"version": PROTOCOL_VERSION, **fields}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def prefix_warmup(self) -> int:
        """The warm-up steps of the trained prefix's recipe."""
        return self.warmup_steps if self.prefix_warmup_steps is None else self.prefix_warmup_steps

    @property
    def frozen(self) -> bool:
        """Whether the protocol has a fixed prefix (``train_from`` is not ``stem``)."""
        return self.train_from != "stem"

    def longer(self, factor: float) -> Protocol:
        """The same recipe trained ``factor`` times as many steps (warm-up scaled too), from
        the same fixed prefix."""
        return replace(self, steps=int(round(self.steps * factor)),
                       warmup_steps=int(round(self.warmup_steps * factor)),
                       prefix_warmup_steps=self.prefix_warmup() if self.prefix_steps else None)

    def to_dict(self) -> dict:
        """The fields as JSON-able values, plus the fingerprint and version."""
        return {**asdict(self), "version": PROTOCOL_VERSION, "fingerprint": self.fingerprint()}


class RunRecord(NamedTuple):
    """One trained cell: accuracies in ``[0, 1]`` on whole clips, cost, and health."""

    key: str
    seed: int
    val_acc: float
    test_acc: float
    params: int
    macs: int
    wall_s: float
    skipped_steps: int
    final_loss: float
    #: the training loss (moving average) at 16 evenly spaced steps, the last one the end
    loss_curve: tuple[float, ...] = ()


def build_model(cell: TableCell, num_classes: int, protocol: Protocol) -> nn.Module:
    """The proxy of ``protocol`` with ``cell`` inserted: ``(N, 3, T, H, W)`` -> logits."""
    kernels = ({} if protocol.block_temporal_kernel is None else {"temporal_kernels": [
        (protocol.block_temporal_kernel,) * d for d in protocol.depths]})
    return create_backbone("proxy", num_classes, positions=protocol.positions,
                           widths=tuple(protocol.widths), depths=tuple(protocol.depths),
                           stem_width=protocol.stem_width,
                           stem_kernel=tuple(protocol.stem_kernel), dropout=protocol.dropout,
                           **kernels, **cell.backbone_kwargs())


def clips_to_tensor(clips: np.ndarray, index: np.ndarray | Tensor, frame_step: int = 1
                    ) -> Tensor:
    """``uint8 (B, T, H, W, 3)`` rows of ``clips`` -> normalised ``float (B, 3, T', H, W)``
    with every ``frame_step``-th frame."""
    rows = clips[np.sort(np.asarray(index))]
    x = torch.from_numpy(np.ascontiguousarray(rows[:, ::frame_step]))
    return x.permute(0, 4, 1, 2, 3).float().div_(255.0).sub_(_MEAN).div_(_STD)


def _labels(labels: np.ndarray, index: np.ndarray | Tensor) -> Tensor:
    return torch.from_numpy(labels[np.sort(np.asarray(index))])


def split_point(protocol: Protocol) -> tuple[str, int]:
    """``(stage, block index)`` after which the protocol's first cell is inserted."""
    presets = proxy_presets(tuple(protocol.depths))
    if protocol.positions not in presets:
        raise ValueError(f"positions: no preset {protocol.positions!r} ({', '.join(presets)})")
    where = presets[protocol.positions]
    for index in range(len(protocol.depths)):
        stage = f"res{index + 2}"
        if where.get(stage):
            return stage, min(where[stage])
    raise ValueError(f"train_from 'cells': positions {protocol.positions!r} insert no cell")


def _prefix_modules(model: nn.Module, protocol: Protocol) -> list[str]:
    """Names of the parameter prefixes that the fixed prefix owns."""
    stages = list(model.stages)
    if protocol.train_from == "cells":
        stage, index = split_point(protocol)
        blocks = [f"stages.{stage}.blocks.{i}." for i in range(index + 1)]
        return ["stem.", *(f"stages.{n}." for n in stages[:stages.index(stage)]),
                f"stages.{stage}.pre.", *blocks]
    if protocol.train_from not in stages:
        raise ValueError(f"train_from: no stage {protocol.train_from!r} ({', '.join(stages)}, "
                         "'cells', or 'stem' to train everything)")
    before = stages[:stages.index(protocol.train_from)]
    for name in before:
        if len(getattr(model.stages[name], "inserted", {})):
            raise ValueError(f"train_from {protocol.train_from!r}: a block is inserted in "
                             f"{name}, which would be frozen")
    return ["stem.", *(f"stages.{n}." for n in before)]


def _prefix_forward(model: nn.Module, x: Tensor, protocol: Protocol) -> Tensor:
    """A clip batch ``(N, 3, T, H, W)`` -> the fixed prefix's features ``(N, C, T', H', W')``."""
    if protocol.train_from == "cells":
        return model.forward_prefix(x, split_point(protocol))
    return model.features_before(x, protocol.train_from)


def _fixed_prefix(protocol: Protocol, clips: np.ndarray, labels: np.ndarray | None = None
                  ) -> nn.Module:
    """The fixed prefix's network (the proxy without a cell, weights from ``prefix_seed``;
    trained whole on ``clips``/``labels`` for ``prefix_steps`` steps when that is not 0), its
    BatchNorm statistics calibrated on ``calib_clips`` of ``clips``, in eval mode."""
    with torch.random.fork_rng():
        torch.manual_seed(protocol.prefix_seed)
        classes = int(labels.max()) + 1 if protocol.prefix_steps and labels is not None else 2
        model = build_model(parse_cell("none"), classes, protocol)
        if protocol.prefix_steps:
            if labels is None:
                raise ValueError("a trained prefix (prefix_steps > 0) needs the labels")
            whole = replace(protocol, train_from="stem", steps=protocol.prefix_steps,
                            warmup_steps=protocol.prefix_warmup())
            inputs = lambda index: clips_to_tensor(clips, index, protocol.frame_step)  # noqa: E731
            with torch.enable_grad():
                _train(model, inputs, labels, whole, protocol.prefix_seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # a cumulative average over the calibration batches
            module.reset_running_stats()
    rng = np.random.default_rng(protocol.prefix_seed)
    pick = rng.choice(len(clips), min(protocol.calib_clips, len(clips)), replace=False)
    model.train()
    with torch.no_grad():
        for start in range(0, len(pick), 64):
            _prefix_forward(model, clips_to_tensor(clips, pick[start:start + 64],
                                                   protocol.frame_step), protocol)
    return model.eval()


def prefix_features(data: TaskData, protocol: Protocol,
                    announce: Callable[[str], None] | None = None) -> dict[str, np.ndarray]:
    """The fixed prefix's features of every clip of every split, ``float16 (N, C, T', H',
    W')``, computed on first use and kept in the task's folder
    (``prefix_<fingerprint>_<split>.npy``, atomic writes); memory-mapped read-only."""
    folder = Path(data.folder)
    paths = {split: folder / f"prefix_{protocol.prefix_fingerprint()}_{split}.npy"
             for split in SPLITS}
    if not all(p.is_file() for p in paths.values()):
        if announce is not None:
            announce(f"computing the fixed prefix's features of {data.task.name} "
                     f"({protocol.prefix_fingerprint()}), once")
        model = _fixed_prefix(protocol, data.x_train, data.y_train)
        with torch.no_grad():
            for split, path in paths.items():
                clips = data.split(split)[0]
                out = [_prefix_forward(model, clips_to_tensor(
                    clips, np.arange(a, min(a + 200, len(clips))), protocol.frame_step),
                    protocol).half().numpy()
                       for a in range(0, len(clips), 200)]
                atomic_save_npy(path, np.concatenate(out))
    return {split: np.load(path, mmap_mode="r") for split, path in paths.items()}


class _Inputs:
    """A split's network inputs by row: clips (trained from the stem) or prefix features."""

    def __init__(self, data: TaskData, protocol: Protocol,
                 features: dict[str, np.ndarray] | None) -> None:
        self.data, self.protocol, self.features = data, protocol, features

    def __call__(self, split: str, index: np.ndarray) -> Tensor:
        index = np.sort(np.asarray(index))
        if self.features is None:
            return clips_to_tensor(self.data.split(split)[0], index, self.protocol.frame_step)
        return torch.from_numpy(np.ascontiguousarray(self.features[split][index])).float()


def _forward(model: nn.Module, x: Tensor, protocol: Protocol) -> Tensor:
    if protocol.train_from == "cells":
        return model.forward_suffix(x, split_point(protocol))
    return model.forward_from(x, protocol.train_from) if protocol.frozen else model(x)


@torch.no_grad()
def _accuracy(model: nn.Module, inputs: _Inputs, split: str) -> float:
    model.eval()
    labels = inputs.data.split(split)[1]
    correct, batch = 0, inputs.protocol.eval_batch
    for start in range(0, len(labels), batch):
        idx = np.arange(start, min(start + batch, len(labels)))
        logits = _forward(model, inputs(split, idx), inputs.protocol)
        correct += int((logits.argmax(1) == _labels(labels, idx)).sum())
    return correct / max(len(labels), 1)


@torch.no_grad()
def evaluate(model: nn.Module, clips: np.ndarray, labels: np.ndarray, batch: int,
             frame_step: int = 1) -> float:
    """Top-1 accuracy of ``model`` (eval mode, whole network) on every clip."""
    model.eval()
    correct = 0
    for start in range(0, len(labels), batch):
        idx = np.arange(start, min(start + batch, len(labels)))
        logits = model(clips_to_tensor(clips, idx, frame_step))
        correct += int((logits.argmax(1) == _labels(labels, idx)).sum())
    return correct / max(len(labels), 1)


def _lr_at(step: int, protocol: Protocol) -> float:
    if step < protocol.warmup_steps:
        return protocol.lr * (step + 1) / protocol.warmup_steps
    span = max(protocol.steps - protocol.warmup_steps, 1)
    progress = (step - protocol.warmup_steps) / span
    return protocol.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def _train(model: nn.Module, inputs: Callable[[np.ndarray], Tensor], labels: np.ndarray,
           protocol: Protocol, seed: int) -> tuple[int, float, tuple[float, ...]]:
    """Train ``model`` in place with ``protocol``'s recipe on the rows ``inputs(index)`` of
    the training split (``labels`` ``(N,)``); clip order from ``seed``. The stages before
    ``train_from`` stay as they are. Returns ``(skipped steps, final loss EMA, the loss EMA
    at 16 evenly spaced steps)``."""
    frozen = _prefix_modules(model, protocol) if protocol.frozen else []
    trained = [p for name, p in model.named_parameters()
               if not any(name.startswith(f) for f in frozen)]
    opt = torch.optim.AdamW(trained, lr=protocol.lr, weight_decay=protocol.weight_decay)
    order = torch.Generator().manual_seed(seed)
    n = len(labels)
    perm, cursor = torch.randperm(n, generator=order), 0
    skipped, loss_ema, curve = 0, float("nan"), []
    every = max(1, protocol.steps // 16)
    model.train()
    for step in range(protocol.steps):
        if step and step % every == 0:
            curve.append(round(loss_ema, 4))
        if cursor + protocol.batch_size > n:
            perm, cursor = torch.randperm(n, generator=order), 0
        idx = perm[cursor:cursor + protocol.batch_size].numpy()
        cursor += protocol.batch_size
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, protocol)
        loss = F.cross_entropy(_forward(model, inputs(idx), protocol), _labels(labels, idx))
        opt.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            skipped += 1
            continue
        loss.backward()
        norm = (nn.utils.clip_grad_norm_(trained, protocol.grad_clip)
                if protocol.grad_clip > 0 else torch.tensor(0.0))
        if not torch.isfinite(norm):
            skipped += 1
            continue
        opt.step()
        value = float(loss.detach())
        loss_ema = value if math.isnan(loss_ema) else 0.95 * loss_ema + 0.05 * value
    return skipped, loss_ema, (*curve, round(loss_ema, 4))


def train_cell(cell: TableCell, data: TaskData, protocol: Protocol, seed: int) -> RunRecord:
    """Train ``cell`` on ``data`` with ``protocol`` from ``seed``; score the final weights.

    The seed fixes the trained weights' initial values and the order of the training
    clips; the fixed prefix (if any) is the protocol's. Threads are the caller's
    (``torch.set_num_threads``).
    """
    start = time.perf_counter()
    features = prefix_features(data, protocol) if protocol.frozen else None
    inputs = _Inputs(data, protocol, features)
    torch.manual_seed(seed)
    model = build_model(cell, len(data.classes), protocol)
    t, h, w = data.x_train.shape[1:4]
    shape = (1, 3, len(range(0, t, protocol.frame_step)), h, w)
    macs = int(count_flops(model, shape)["macs"])
    params = count_params(model)
    skipped, loss_ema, curve = _train(model, lambda index: inputs("train", index),
                                      data.y_train, protocol, seed)
    val = _accuracy(model, inputs, "val")
    test = _accuracy(model, inputs, "test")
    return RunRecord(cell.key, seed, val, test, params, macs,
                     round(time.perf_counter() - start, 2), skipped, round(loss_ema, 4), curve)
