"""``darts``: bi-level DARTS. Before every weight step, an architecture step on the
``arch`` half: Adam on alpha/beta only (its settings: ``arch_lr``, ``arch_betas``,
``arch_weight_decay``), first order by default (``autograd.grad`` on alpha/beta alone: no
weight gradient is computed and thrown away), or the unrolled second-order gradient
(``arch_order=2``); skipped during the first ``warmup_epochs``. The architecture loss is
the cross-entropy plus the ``anti_collapse`` regulariser and, with a ``cost_target``, the
expected-cost term ``cost_weight * max(0, E[MACs] / target - 1)``."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from ..costmodel import CellBudget
from ..darts import arch_gradient, beta_decay_penalty, entropy_penalty
from .base import Strategy, register_strategy

__all__ = ["Darts"]


@register_strategy("darts")
class Darts(Strategy):
    """Alpha/beta learned by an architecture step on the other half of the training set."""

    trains_arch = True

    def __init__(self) -> None:
        self._budget: CellBudget | None = None
        self._arch_target = 0.0

    def arch_step(self, module: pl.LightningModule, optimizer: torch.optim.Optimizer,
                  weights: dict, arch: dict, batch_idx: int) -> Tensor | None:
        """One Adam step on alpha/beta (after the warm-up epochs); returns the
        architecture-half loss (a scalar)."""
        hp = module.hparams
        if module.current_epoch < hp.warmup_epochs:
            return None
        params = module.model.arch_parameters()
        optimizer.zero_grad()
        if hp.arch_order == 1:
            # gradients of alpha/beta only: autograd skips every weight gradient
            loss_a = module._loss(arch, "train_a")
            module._check_finite(loss_a, "architecture", batch_idx)
            grads = torch.autograd.grad(loss_a + self.penalty(module), params,
                                        allow_unused=True)
            grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
        else:
            trainable = [p for p in module.model.weight_parameters() if p.requires_grad]
            losses: list[Tensor] = []

            def val_loss() -> Tensor:
                loss = module._loss(arch)
                losses.append(loss.detach())
                return loss + self.penalty(module)

            grads = arch_gradient(lambda: module._loss(weights), val_loss, trainable, params,
                                  order=2, xi=module._weight_lr(),
                                  weight_decay=hp.weight_decay)
            loss_a = losses[0]
            module._check_finite(loss_a, "architecture", batch_idx)
            with torch.no_grad():
                module.acc["train_a"].update(module(arch["video"]), arch["label"])
        _all_reduce_(grads)
        for p, g in zip(params, grads):
            p.grad = g
        optimizer.step()
        return loss_a.detach()

    def penalty(self, module: pl.LightningModule) -> Tensor:
        """The terms added to the architecture loss: the anti-collapse regulariser and the
        expected cost (a scalar; zero when both are off)."""
        return self.anti_collapse(module) + self.cost_term(module)

    @staticmethod
    def anti_collapse(module: pl.LightningModule) -> Tensor:
        """The anti-collapse term: ``beta_decay`` (beta-DARTS, ramped linearly over the
        epochs after warm-up) or ``entropy`` (of softmax(alpha) and the input weights)."""
        hp, a = module.hparams, module.arch
        if hp.anti_collapse == "none" or hp.anti_collapse_weight == 0.0:
            return a.alpha.new_zeros(())
        if hp.anti_collapse == "beta_decay":
            span = max(1, (module.trainer.max_epochs or 1) - hp.warmup_epochs)
            ramp = min(1.0, (module.current_epoch - hp.warmup_epochs + 1) / span)
            return hp.anti_collapse_weight * ramp * beta_decay_penalty(a.alpha)
        return hp.anti_collapse_weight * (entropy_penalty(a.op_weights())
                                   + entropy_penalty(a.input_weights()[1:]))

    def cost_term(self, module: pl.LightningModule) -> Tensor:
        """``cost_weight * relu(E[MACs] / target - 1)`` under softmax(alpha) at the
        supernet's width (zero without a ``cost_target`` or with ``cost_weight`` 0)."""
        hp = module.hparams
        if hp.cost_target is None or not hp.cost_weight:
            return module.arch.alpha.new_zeros(())
        if self._budget is None:
            self._budget = module.cost_budget()
            # the target at the supernet's width: a budget below the cheapest cell there is
            # met by narrowing the derived cell (CellBudget.fit); alpha is pushed to the
            # cheapest ops, not toward an expected cost it cannot reach
            self._arch_target = max(self._budget.target, self._budget.space.cheapest())
        expected = self._budget.space.expected_macs(module.arch.op_weights())
        return hp.cost_weight * F.relu(expected / self._arch_target - 1.0)

    def log_epoch(self, module: pl.LightningModule) -> None:
        """Log the expected MACs of the cells under softmax(alpha) (with a budget)."""
        if self._budget is not None:
            ops = module.arch.op_weights().detach()
            module.log("arch/expected_mmacs", float(self._budget.space.expected_macs(ops)) / 1e6)


def _all_reduce_(grads: list[Tensor]) -> None:
    """Average hand-computed arch gradients over DDP ranks (``manual_backward`` would do
    it, but these come from ``autograd.grad``)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        world = torch.distributed.get_world_size()
        for g in grads:
            torch.distributed.all_reduce(g)
            g.div_(world)
