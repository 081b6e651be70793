"""The training-strategy registry: how a supernet training step treats alpha/beta.

A strategy is a small class, one per file in this package, registered by name with
:func:`register_strategy`; :class:`~supernet.search.SearchModule` looks its
``strategy=`` argument up with :func:`get_strategy` and calls the strategy's hooks instead
of branching on the name. What a strategy owns (everything else is shared):

* :attr:`Strategy.trains_arch` -- whether alpha/beta are learned; when not,
  :meth:`Strategy.prepare` sets them to exactly uniform (zero) and freezes them;
* :meth:`Strategy.arch_step` -- the architecture step before each weight step (its
  optimiser step, its loss terms), or none;
* :meth:`Strategy.weight_path` -- which paths of the supernet the weight step trains (all
  of them mixed, or one sampled path);
* :meth:`Strategy.record` -- what it writes into the checkpoint (at least its name, as
  ``attnas_supernet``), and :meth:`Strategy.log_epoch` -- what it logs at an epoch's end.

Adding a strategy is adding a file: every module of this package is imported when the
package is, and its ``@register_strategy("name")`` class becomes a value of
``--model.strategy``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, TypeVar

import pytorch_lightning as pl
import torch
from torch import Tensor

from datamodules.registry import Registry

__all__ = ["Strategy", "register_strategy", "get_strategy", "strategy_names", "check_strategy"]

#: name -> strategy class, in registration order (module names, alphabetical)
_REGISTRY: Registry[Strategy] = Registry("supernet mode")

S = TypeVar("S", bound="type[Strategy]")


class Strategy:
    """How a :class:`~supernet.search.SearchModule` trains its supernet (the default hooks:
    alpha/beta frozen at uniform, no architecture step, every path mixed).

    Hooks take the search module (``module``: its ``model``, ``arch``, ``hparams`` and
    loss helpers) as their first argument; a strategy keeps no state of its own beyond
    caches that can be rebuilt from the module.
    """

    #: the name ``--model.strategy`` selects it by (set by :func:`register_strategy`)
    name: ClassVar[str] = ""
    #: whether alpha/beta are trained (an architecture optimiser step)
    trains_arch: ClassVar[bool] = False

    def prepare(self, module: pl.LightningModule) -> None:
        """Called once the supernet is built: a strategy that does not train alpha/beta
        sets them to exactly uniform (zero logits) and freezes them."""
        if self.trains_arch:
            return
        with torch.no_grad():
            module.arch.alpha.zero_()
            module.arch.beta.zero_()
        for p in module.model.arch_parameters():
            p.requires_grad_(False)

    def arch_step(self, module: pl.LightningModule, optimizer: torch.optim.Optimizer,
                  weights: dict, arch: dict, batch_idx: int) -> Tensor | None:
        """The architecture step before the weight step of one training iteration.

        Args:
            module: the search module.
            optimizer: the architecture optimiser (Adam on alpha/beta).
            weights, arch: the two halves' batches, ``{"video": (N, C, T, H, W),
                "label": (N,)}``.
            batch_idx: the batch's index in the epoch (for error messages).

        Returns:
            the architecture-half loss (a scalar, logged as ``train_a/loss``), or None when
            this strategy takes no architecture step (the default).
        """
        return None

    @contextlib.contextmanager
    def weight_path(self, module: pl.LightningModule, step: int) -> Iterator[None]:
        """Around the weight step's forward and backward at global step ``step``: the
        paths of the supernet it trains (default: the whole mixture)."""
        yield

    def record(self, module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Write what this strategy needs into a checkpoint being saved (its name, which a
        resume checks against the run's ``--model.strategy``)."""
        checkpoint["attnas_supernet"] = self.name

    def log_epoch(self, module: pl.LightningModule) -> None:
        """Log this strategy's own metrics at the end of a training epoch (default none)."""


def register_strategy(name: str) -> Callable[[S], S]:
    """Class decorator: register a :class:`Strategy` subclass under ``name``."""
    return _REGISTRY.register(name)


def strategy_names() -> tuple[str, ...]:
    """The registered strategy names (``darts``, ``single_path``, ``uniform``, ...)."""
    return _REGISTRY.names()


def check_strategy(name: object) -> str:
    """Return ``name`` if a strategy is registered under it, else ``ValueError`` in one line
    listing the known names."""
    return _REGISTRY.check(name)


def get_strategy(name: str) -> Strategy:
    """A new instance of the strategy registered as ``name`` (``ValueError`` listing the
    known names otherwise)."""
    return _REGISTRY.create(name)
