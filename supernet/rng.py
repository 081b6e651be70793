"""The RNG stream of training, made a function of the seed and the epoch.

A run resumed from an epoch's checkpoint must draw the same random numbers (dropout,
single-path sampling) as the uninterrupted run. Restoring the RNG state saved in the
checkpoint is not enough: between the save and the next epoch the two runs consume the
global stream differently (a resumed run has a sanity check; a new DataLoader iterator
draws its base seed from it, a persistent one does not; Lightning creates the first
epoch's iterator of a run *before* ``on_train_epoch_start`` and every later epoch's
*after* it). So the modules seed the stream by ``(seed, epoch)`` at the first batch of
every training epoch (``on_train_batch_start``, ``batch_idx == 0``: the iterator exists in
both cases): whatever happened before, epoch ``e`` draws the same numbers.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["run_seed", "seed_epoch"]


def run_seed(default: int | None = 0) -> int | None:
    """The run's seed: ``PL_GLOBAL_SEED`` (set by ``seed_everything``) as an integer, else
    ``default`` (unset, empty or not an integer)."""
    text = os.environ.get("PL_GLOBAL_SEED", "")
    return int(text) if text.lstrip("-").isdigit() else default


def seed_epoch(epoch: int, seed: int | None = None) -> int:
    """Seed torch, numpy and ``random`` for training epoch ``epoch``; ``seed`` defaults to
    the run's seed (``seed_everything``'s ``PL_GLOBAL_SEED``, else 0). Returns the seed
    used."""
    if seed is None:
        seed = run_seed()
    # ints only: the hash of a str changes with every process (PYTHONHASHSEED)
    derived = hash((int(seed), int(epoch), 0x5EED)) & 0xFFFF_FFFF
    torch.manual_seed(derived)
    np.random.seed(derived)
    random.seed(derived)
    return derived
