"""``single_path``: single-path one-shot (SPOS). Each weight step samples one op and one
input per node uniformly, pins that path and trains only its weights; alpha/beta stay
frozen at uniform. The path of a step is drawn from ``(run seed, step)``, so a resume,
every cell position and every DDP rank draw the same one."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytorch_lightning as pl
import torch
from torch import Tensor

from ..rng import run_seed
from ..space import NUM_OPS
from .base import Strategy, register_strategy

__all__ = ["SinglePath"]


@register_strategy("single_path")
class SinglePath(Strategy):
    """One uniformly sampled path per weight step."""

    @staticmethod
    def sample_path(num_nodes: int, step: int, seed: int | None = None
                    ) -> tuple[Tensor, Tensor]:
        """The single path of training step ``step``: one op and one input per node,
        drawn uniformly from a generator seeded by ``(seed, step)`` (``seed``: the run's
        seed by default).

        Returns:
            ``(op_mask, in_mask)``: bool masks of shapes ``(num_nodes, NUM_OPS)`` and
            ``(num_nodes, num_nodes)`` with one True per row, for
            :meth:`~supernet.cells.ArchParameters.set_restrictions`.
        """
        k = num_nodes
        base = run_seed() if seed is None else seed
        gen = torch.Generator().manual_seed(base * 1_000_003 + int(step))
        ops = torch.randint(NUM_OPS, (k,), generator=gen)
        op_mask = torch.zeros(k, NUM_OPS, dtype=torch.bool)
        op_mask[torch.arange(k), ops] = True
        in_mask = torch.zeros(k, k, dtype=torch.bool)
        for node in range(k):
            in_mask[node, int(torch.randint(node + 1, (1,), generator=gen))] = True
        return op_mask, in_mask

    @contextlib.contextmanager
    def weight_path(self, module: pl.LightningModule, step: int) -> Iterator[None]:
        """Pin step ``step``'s sampled path for the weight step, then clear it."""
        module.arch.set_restrictions(self.sample_path(module.arch.num_nodes, step))
        try:
            yield
        finally:
            module.arch.clear_restrictions()
