"""Late fusion of two-stream (or any multi-model) predictions: per-video scores averaged.

``attnas retrain test`` writes ``test_scores.pt`` into its run folder: for every test video
its class probabilities averaged over the views (``scores (V, K)``), with ``video_index``
``(V,)``, ``labels`` ``(V,)``, the ``modality`` the model read, and the number of classes.
``attnas retrain test ... --fuse_scores OTHER/test_scores.pt [...]`` averages this run's
scores with those files' -- the two-stream late fusion of an RGB and a flow model -- and
logs ``test/fused_video_top{k}`` next to the run's own ``test/video_top{k}``. The files
must score the same videos with the same labels (the same test list and classes), which
is checked before anything is averaged.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from datamodules.atomic import atomic_path

__all__ = ["save_scores", "load_scores", "fuse", "SCORES_FILE"]

SCORES_FILE = "test_scores.pt"


def save_scores(path: str | Path, video_index: Tensor, scores: Tensor, labels: Tensor,
                modality: str) -> Path:
    """Write a scores file atomically (rows sorted by video index; each row sums to 1)."""
    order = torch.argsort(video_index)
    probs = scores[order].float()
    probs = probs / probs.sum(-1, keepdim=True).clamp_min(1e-12)
    doc = {"format": "attnas-scores", "version": 1, "video_index": video_index[order].cpu(),
           "scores": probs.cpu(), "labels": labels[order].cpu(), "modality": modality,
           "num_classes": int(scores.shape[1])}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(doc, tmp)
    return path


def load_scores(path: str | Path) -> dict[str, Any]:
    """Read a scores file; ``ValueError`` (one line) for a missing or foreign file."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--fuse_scores: no such file {os.fspath(path)!r} (a run folder's "
                         f"{SCORES_FILE}, written by attnas retrain test)")
    try:
        doc = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same input error
        raise ValueError(f"--fuse_scores: cannot read {p} ({type(err).__name__})") from None
    if not isinstance(doc, dict) or doc.get("format") != "attnas-scores":
        raise ValueError(f"--fuse_scores: {p} is not an attnas scores file ({SCORES_FILE})")
    return doc


def fuse(own: dict[str, Any], others: Sequence[dict[str, Any]], names: Sequence[str]
         ) -> Tensor:
    """The average of ``own['scores']`` and every other file's, ``(V, K)``; ``ValueError``
    when a file scores other videos, other labels or another number of classes."""
    total = own["scores"].clone()
    for doc, name in zip(others, names):
        if doc["num_classes"] != own["num_classes"]:
            raise ValueError(f"--fuse_scores: {name} has {doc['num_classes']} classes, this "
                             f"run {own['num_classes']}")
        if not torch.equal(doc["video_index"], own["video_index"]) or \
                not torch.equal(doc["labels"], own["labels"]):
            raise ValueError(f"--fuse_scores: {name} scores other videos or labels than this "
                             f"run ({len(doc['labels'])} vs {len(own['labels'])} videos); "
                             f"fuse runs tested on the same list")
        total += doc["scores"]
    return total / (1 + len(others))
