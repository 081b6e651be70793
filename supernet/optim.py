"""The optimisers of the search and retrain modules: one choice of weight optimiser
(:data:`OPTIMIZERS`) and the search's pair (weights + architecture, cosine schedule)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from .space import check_choice

__all__ = ["OPTIMIZERS", "check_optimizer", "weight_optimizer", "search_optimizers"]

#: the weight optimisers: ``sgd`` (momentum; DARTS) or ``adamw``
OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw")


def check_optimizer(name: str) -> str:
    """Return ``name`` if it is one of :data:`OPTIMIZERS`, else ``ValueError`` listing them."""
    return check_choice(name, OPTIMIZERS, "optimizer")


def weight_optimizer(params: Iterable, name: str, lr: float, momentum: float,
                     weight_decay: float = 0.0, nesterov: bool = False
                     ) -> torch.optim.Optimizer:
    """``AdamW`` for ``name == "adamw"``, else SGD with ``momentum`` (and ``nesterov``).
    ``params`` may be parameter groups that carry their own ``weight_decay``."""
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                           nesterov=nesterov)


def search_optimizers(hp: Mapping[str, Any], weights: Iterable, arch: Iterable,
                      max_epochs: int | None) -> tuple[list, list]:
    """A search module's ``configure_optimizers``: the weight optimiser (``hp.optimizer``,
    cosine-annealed per epoch from ``hp.lr`` to ``hp.lr_min`` over ``max_epochs``) and Adam
    on the architecture parameters (``hp.arch_lr``, ``hp.arch_betas``,
    ``hp.arch_weight_decay``)."""
    w_opt = weight_optimizer(weights, hp["optimizer"], hp["lr"], hp["momentum"],
                             hp["weight_decay"])
    a_opt = torch.optim.Adam(arch, lr=hp["arch_lr"], betas=tuple(hp["arch_betas"]),
                             weight_decay=hp["arch_weight_decay"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, T_max=max(1, max_epochs or 1),
                                                       eta_min=hp["lr_min"])
    return [w_opt, a_opt], [{"scheduler": sched, "interval": "epoch"}]
