"""The table protocol: one fixed, cheap recipe that trains a cell on a task.

The network is the proxy backbone (the search's own family) at the width the protocol
names, with the cell inserted at the proxy's default positions (after the last block of
res3 and of res4). Training reads the task's decoded clips from memory: AdamW, linear
warm-up then cosine decay to 0, gradient-norm clipping, a fixed number of steps over
shuffled epochs; a step whose loss or gradient is not finite is skipped and counted. The
final weights are scored on the validation split (what a search may choose by) and on the
test split (what the table reports), every clip whole.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from supernet.counting import count_flops, count_params
from supernet.factory import create_backbone

from .cells import TableCell
from .tasks import TaskData

__all__ = ["Protocol", "RunRecord", "build_model", "train_cell", "evaluate", "clips_to_tensor",
           "PROTOCOL_VERSION"]

#: bump when the training code changes what a protocol's numbers mean
PROTOCOL_VERSION = 1
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
        positions: insertion preset of the proxy (``default``: after res3 and res4).
        eval_batch: clips per evaluation batch (no effect on the numbers).
    """

    steps: int = 800
    batch_size: int = 16
    frame_step: int = 2
    lr: float = 2e-3
    warmup_steps: int = 80
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    widths: tuple[int, ...] = (32, 64, 128)
    depths: tuple[int, ...] = (1, 1, 1)
    stem_width: int = 16
    stem_kernel: tuple[int, ...] = (3, 3, 3)
    dropout: float = 0.0
    positions: str = "default"
    eval_batch: int = 150

    def fingerprint(self) -> str:
        """12 hex digits that change with any field that changes the numbers."""
        fields = asdict(self)
        fields.pop("eval_batch")
        text = json.dumps({"version": PROTOCOL_VERSION, **fields}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def longer(self, factor: float) -> Protocol:
        """The same recipe trained ``factor`` times as many steps (warm-up scaled too)."""
        return replace(self, steps=int(round(self.steps * factor)),
                       warmup_steps=int(round(self.warmup_steps * factor)))

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


def build_model(cell: TableCell, num_classes: int, protocol: Protocol) -> nn.Module:
    """The proxy of ``protocol`` with ``cell`` inserted: ``(N, 3, T, H, W)`` -> logits."""
    return create_backbone("proxy", num_classes, positions=protocol.positions,
                           widths=tuple(protocol.widths), depths=tuple(protocol.depths),
                           stem_width=protocol.stem_width,
                           stem_kernel=tuple(protocol.stem_kernel), dropout=protocol.dropout,
                           **cell.backbone_kwargs())


def clips_to_tensor(clips: np.ndarray, index: np.ndarray | Tensor, frame_step: int = 1
                    ) -> Tensor:
    """``uint8 (B, T, H, W, 3)`` rows of ``clips`` -> normalised ``float (B, 3, T', H, W)``
    with every ``frame_step``-th frame."""
    rows = clips[np.sort(np.asarray(index))]
    x = torch.from_numpy(np.ascontiguousarray(rows[:, ::frame_step]))
    return x.permute(0, 4, 1, 2, 3).float().div_(255.0).sub_(_MEAN).div_(_STD)


def _labels(labels: np.ndarray, index: np.ndarray | Tensor) -> Tensor:
    return torch.from_numpy(labels[np.sort(np.asarray(index))])


@torch.no_grad()
def evaluate(model: nn.Module, clips: np.ndarray, labels: np.ndarray, batch: int,
             frame_step: int = 1) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on every clip."""
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


def train_cell(cell: TableCell, data: TaskData, protocol: Protocol, seed: int) -> RunRecord:
    """Train ``cell`` on ``data`` with ``protocol`` from ``seed``; score the final weights.

    The seed fixes the initial weights and the order of the training clips. Threads are the
    caller's (``torch.set_num_threads``).
    """
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = build_model(cell, len(data.classes), protocol)
    t, h, w = data.x_train.shape[1:4]
    shape = (1, 3, len(range(0, t, protocol.frame_step)), h, w)
    macs = int(count_flops(model, shape)["macs"])
    params = count_params(model)
    opt = torch.optim.AdamW(model.parameters(), lr=protocol.lr,
                            weight_decay=protocol.weight_decay)
    order = torch.Generator().manual_seed(seed)
    n = len(data.y_train)
    perm, cursor = torch.randperm(n, generator=order), 0
    skipped, loss_ema = 0, float("nan")
    model.train()
    for step in range(protocol.steps):
        if cursor + protocol.batch_size > n:
            perm, cursor = torch.randperm(n, generator=order), 0
        idx = perm[cursor:cursor + protocol.batch_size].numpy()
        cursor += protocol.batch_size
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, protocol)
        clips = clips_to_tensor(data.x_train, idx, protocol.frame_step)
        loss = F.cross_entropy(model(clips), _labels(data.y_train, idx))
        opt.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            skipped += 1
            continue
        loss.backward()
        norm = (nn.utils.clip_grad_norm_(model.parameters(), protocol.grad_clip)
                if protocol.grad_clip > 0 else torch.tensor(0.0))
        if not torch.isfinite(norm):
            skipped += 1
            continue
        opt.step()
        value = float(loss.detach())
        loss_ema = value if math.isnan(loss_ema) else 0.95 * loss_ema + 0.05 * value
    val = evaluate(model, data.x_val, data.y_val, protocol.eval_batch, protocol.frame_step)
    test = evaluate(model, data.x_test, data.y_test, protocol.eval_batch, protocol.frame_step)
    return RunRecord(cell.key, seed, val, test, params, macs,
                     round(time.perf_counter() - start, 2), skipped, round(loss_ema, 4))
