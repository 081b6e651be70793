"""The search LightningModule: trains the weight-sharing supernet, manual optimisation.

Every training step takes a batch dict ``{"weights": batch, "arch": batch}`` (the two
disjoint halves of the training set, see ``datamodules.VideoDataModule(search=True)``);
each half's batch is ``{"video": (N, 3, T, H, W) float, "label": (N,) int64, ...}``.

How the supernet is trained (``strategy=``) is a strategy of :mod:`supernet.strategies`,
looked up by name: ``uniform`` (the default: alpha/beta frozen at exactly uniform, an
iteration is one weight step), ``darts`` (bi-level: an Adam step on alpha/beta on the
``arch`` half, first or second order, then the weight step) or ``single_path`` (one
uniformly sampled path per weight step). This module owns what they share: the weight
step (SGD/AdamW + cosine schedule, clipping, never touching alpha/beta), validation with
recalibrated BatchNorm statistics, the temperature schedule, checkpoints and exact resume.

The cell is then chosen by a selection rule of ``derive.rules`` (``select=``), run at the
end of ``fit`` by the search CLI; this module only stores the rule's name and options.

The signature's defaults are the measured ones (``uniform`` + ``perturb``, ``sincos``,
AdamW, ``select_bn: batch``); a config sets only what differs (data, trainer, scale).
Checkpoints saved before a setting existed, or before the defaults changed, are read with
the values they were trained with (:func:`migrate_hparams`, in :meth:`on_load_checkpoint`).
"""

from __future__ import annotations

import collections
import inspect
import random
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from .cells import check_bn_mode, recalibrate_batchnorm
from .costmodel import CellBudget, SpaceCost, check_min_width, parse_cost_target
from .darts import entropy_penalty
from .factory import create_backbone
from .hparams import (
    RENAMED_OPTIONS,
    check_fraction,
    check_nonnegative,
    check_positive,
    rename_options,
)
from .memory_format import LayoutHooks, apply_layout, check_memory_format
from .optim import check_optimizer, search_optimizers
from .rng import seed_epoch
from .strategies import Strategy, check_strategy, get_strategy, strategy_names

__all__ = ["SearchModule", "SUPERNET_MODES", "HPARAMS_VERSION", "LEGACY_DEFAULTS",
           "SELECTION_OPTIONS", "migrate_hparams", "check_selection_options"]

#: how the supernet can be trained: the names of :mod:`supernet.strategies`
SUPERNET_MODES: tuple[str, ...] = strategy_names()

#: the version of the hyper-parameters' meaning, saved as ``attnas_hparams_version``: 2 =
#: the measured defaults in the signature. A checkpoint without it was saved before, when
#: a missing key meant :data:`LEGACY_DEFAULTS`
HPARAMS_VERSION = 2

#: what each setting was before it existed or before the defaults moved into the signature
#: (round 1's DARTS reference settings; ``val_recalibrate`` 0: no recalibration before it
#: existed). A checkpoint of version < 2 lacking a key was trained with this value.
LEGACY_DEFAULTS: dict[str, Any] = {
    "backbone": "proxy", "positions": None, "num_nodes": 3, "inner_ratio": 0.5,
    "kv_pool": True, "position_encoding": "none", "backbone_kwargs": None, "optimizer": "sgd",
    "lr": 0.05, "lr_min": 1e-3, "momentum": 0.9, "weight_decay": 3e-4, "arch_lr": 3e-4,
    "arch_betas": (0.5, 0.999), "arch_weight_decay": 1e-3, "arch_order": 1,
    "warmup_epochs": 0, "grad_clip": 5.0, "anti_collapse": "none",
    "anti_collapse_weight": 0.0,
    "temperature": (1.0, 1.0), "strategy": "darts", "select": "argmax",
    "select_val_batches": 8, "select_calib_batches": 4, "select_finetune_steps": 0,
    "select_bn": "recalibrate", "val_recalibrate": 0, "cost_target": None,
    "cost_weight": 1.0, "cost_min_width": 0.0, "in_channels": 3, "memory_format": "auto",
    "candidate_norm": False,
}

#: settings that only the selection reads (a re-selection may change them after loading)
SELECTION_OPTIONS = ("select", "select_val_batches", "select_calib_batches",
                     "select_finetune_steps", "select_bn", "cost_target", "cost_min_width")


def migrate_hparams(hparams: Mapping[str, Any], version: int | None = None) -> dict[str, Any]:
    """A search checkpoint's ``hyper_parameters`` as they are meant: a copy in which a
    checkpoint older than :data:`HPARAMS_VERSION` (``version`` None or below) has every
    missing key filled with its :data:`LEGACY_DEFAULTS` value (the value it was trained
    with). A current checkpoint's keys are returned as they are. Options saved under an
    old name (:data:`supernet.hparams.RENAMED_OPTIONS`: ``position``, ``supernet``,
    ``remedy``, ``remedy_weight``) are renamed, whatever the version."""
    out = dict(hparams)
    rename_options(out)
    if (version or 0) < HPARAMS_VERSION:
        for key, value in LEGACY_DEFAULTS.items():
            out.setdefault(key, value)
    return out


def check_selection_options(select: object = "perturb", select_val_batches: object = 8,
                            select_calib_batches: object = 4, select_finetune_steps: object = 0,
                            select_bn: object = "batch", cost_target: object = None,
                            cost_min_width: object = 0.0) -> None:
    """``ValueError`` (one line) for a bad selection setting: the rule's name must be a
    non-empty string (that it names a rule is for ``derive.rules`` to say), counts integers
    (``select_val_batches`` >= 1, the others >= 0), ``select_bn`` a BatchNorm mode, the
    budget a cost target (:func:`supernet.costmodel.parse_cost_target`) and its node width
    an inner ratio."""
    if not isinstance(select, str) or not select:
        raise ValueError(f"select must be a selection rule name, got {select!r}")
    check_bn_mode(select_bn, "select_bn")
    for name, value, low in (("select_val_batches", select_val_batches, 1),
                             ("select_calib_batches", select_calib_batches, 0),
                             ("select_finetune_steps", select_finetune_steps, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if cost_target is not None:
        parse_cost_target(cost_target)
    check_min_width(cost_min_width)


class SearchModule(LayoutHooks, pl.LightningModule):
    """Supernet search on a proxy backbone.

    The defaults are the settings the benchmark measured best on the synthetic benchmark
    (round 2, ``docs/design.md#search-defaults``): a ``uniform`` supernet selected by
    ``perturb`` with per-batch BatchNorm statistics, sinusoidal positions, AdamW. Round 1's
    DARTS reference settings (``darts`` + ``argmax``, SGD lr 0.05, position ``none``,
    ``select_bn: recalibrate``) are :data:`LEGACY_DEFAULTS`; round 1 measured them *not*
    to select in a short search. Shipped configs set only data, trainer and scale.

    Args:
        num_classes: classes of the dataset (linked from the datamodule by the CLI).
        backbone: backbone name for :func:`supernet.create_backbone` (default ``proxy``).
        positions: insertion positions (None = the backbone's default), see create_backbone.
        num_nodes: K, operation nodes per cell (default 3).
        inner_ratio: cell inner width / channels (default 0.5).
        kv_pool: max-pool dot-product keys/values 1x2x2 (default True).
        position_encoding: positional signal for dot-product ops: none | coords | sincos (default
            ``sincos``; measured: with it both 5-epoch uniform supernets learned, val 77 /
            47 %, without it 2 of 3 stayed at chance, and the sincos cells retrained to
            42-100 % against non-local's 63 %).
        candidate_norm: every mixed edge weighs each candidate by the inverse of its
            output's scale on the batch, so the mixture (and the scores of the selection
            rules) compare the candidates on one scale (default False).
        backbone_kwargs: extra keyword arguments for the backbone (e.g. proxy widths).
        optimizer: weight optimiser, ``sgd`` (momentum; DARTS) or ``adamw`` (default;
            measured from scratch on the synthetic benchmark: SGD at lr 0.05 reached 36 %
            val top-1 after 3 epochs, AdamW at 0.002 58 %).
        lr: weight learning rate (cosine-annealed to ``lr_min`` over ``max_epochs``).
        lr_min: final weight learning rate.
        momentum: SGD momentum.
        weight_decay: weight decay of the weight optimiser.
        arch_lr: Adam learning rate for alpha/beta (DARTS: 3e-4).
        arch_betas: Adam betas (DARTS: (0.5, 0.999)).
        arch_weight_decay: Adam weight decay on alpha/beta (DARTS: 1e-3).
        arch_order: 1 (first order) or 2 (unrolled second order).
        warmup_epochs: epochs with alpha/beta frozen at the start.
        grad_clip: max gradient norm of the weight step (0 disables).
        anti_collapse: anti-collapse regulariser added to the architecture loss: ``none``,
            ``beta_decay`` (beta-DARTS logsumexp regulariser on alpha) or ``entropy``
            (entropy of softmax(alpha) and of the input weights).
        anti_collapse_weight: weight of the anti-collapse term (beta-DARTS ramps it linearly
            over the epochs after warm-up, as its paper does; entropy uses it as is).
        temperature: (start, end) softmax temperature on alpha, annealed linearly over the
            search epochs (``(1.0, 1.0)`` = off).
        strategy: how the supernet is trained, a strategy of :mod:`supernet.strategies`:
            ``uniform`` (default: alpha frozen uniform, weight steps only), ``darts``
            (bi-level, alpha learned) or ``single_path`` (one sampled path per step).
        select: the selection rule that derives the cell at the end of the search (a rule
            of ``derive.rules``: ``perturb`` (default), ``perturb_factors``, ``alone``,
            ``argmax``).
        select_val_batches: validation batches a data-driven rule scores on.
        select_calib_batches: training batches that recalibrate BatchNorm statistics before
            each score.
        select_finetune_steps: weight steps after each decision (0 = none).
        select_bn: BatchNorm while a data-driven rule scores: ``batch`` (default: each
            validation batch normalised by its own statistics, as in training; measured:
            eval-mode validation losses of 7e3 in a recalibrated uniform supernet) or
            ``recalibrate`` (running statistics recomputed on ``select_calib_batches``
            training batches before each score).
        val_recalibrate: before every validation, BatchNorm statistics are recomputed on
            this many of the latest training batches (0 = keep the running averages). The
            running averages of a supernet mix many networks; evaluated as they are, a
            search of ours showed a validation loss of 6e21 with a training loss of 0.78.
        cost_target: a budget on the MACs of the inserted cells per clip (None = none):
            GMACs (``0.05``), a ratio of the non-local blocks at the same positions
            (``"0.5x"``, ``"1x"``), a block name (``"a2"``) or a ratio of one (``"2xa2"``);
            see :mod:`supernet.costmodel`. The selection rule then only picks choices that
            keep the cell within it and fits the cell's inner width to it; with
            ``strategy="darts"`` the architecture loss also gets ``cost_weight *
            max(0, E[MACs] / target - 1)``, the expected MACs under softmax(alpha) at the
            supernet's width (target raised to the cheapest cell there, if below it).
        cost_weight: weight of that expected-cost term (darts only).
        cost_min_width: with a budget, the narrowest inner ratio worth a node (default 0:
            the derived cell always has ``num_nodes`` nodes, only its width is fitted). Above
            0 the budget also sets the number of nodes: the cell keeps the most leading
            selected nodes that fit at an inner ratio >= this (e.g. 0.25), dropping the
            trailing ones (:meth:`supernet.costmodel.CellBudget.fit_size`).
        in_channels: input channels (linked from ``data.modality`` by the CLI: 3 for RGB,
            2 for optical flow).
        memory_format: ``auto`` (default: channels-last-3d weights on the CPU, where
            ``benchmarks/memory_format_speed.py`` measured training steps faster; contiguous
            elsewhere), ``contiguous`` or ``channels_last``. :mod:`supernet.memory_format`.
        position: deprecated name of ``position_encoding`` (accepted for one release).
        supernet: deprecated name of ``strategy`` (accepted for one release).
        remedy: deprecated name of ``anti_collapse`` (accepted for one release).
        remedy_weight: deprecated name of ``anti_collapse_weight`` (accepted for one release).
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "proxy",
        positions: str | dict[str, list[int]] | None = None,
        num_nodes: int = 3,
        inner_ratio: float = 0.5,
        kv_pool: bool = True,
        position_encoding: str = "sincos",
        backbone_kwargs: dict | None = None,
        optimizer: Literal["sgd", "adamw"] = "adamw",
        lr: float = 0.002,
        lr_min: float = 2e-5,
        momentum: float = 0.9,
        weight_decay: float = 3e-4,
        arch_lr: float = 3e-4,
        arch_betas: tuple[float, float] = (0.5, 0.999),
        arch_weight_decay: float = 1e-3,
        arch_order: int = 1,
        warmup_epochs: int = 0,
        grad_clip: float = 5.0,
        anti_collapse: Literal["none", "beta_decay", "entropy"] = "none",
        anti_collapse_weight: float = 0.0,
        temperature: tuple[float, float] = (1.0, 1.0),
        strategy: str = "uniform",
        select: str = "perturb",
        select_val_batches: int = 8,
        select_calib_batches: int = 4,
        select_finetune_steps: int = 0,
        select_bn: str = "batch",
        val_recalibrate: int = 4,
        cost_target: str | float | None = None,
        cost_weight: float = 1.0,
        cost_min_width: float = 0.0,
        in_channels: int = 3,
        memory_format: str = "auto",
        candidate_norm: bool = False,
        position: str | None = None,
        supernet: str | None = None,
        remedy: Literal["none", "beta_decay", "entropy"] | None = None,
        remedy_weight: float | None = None,
    ) -> None:
        super().__init__()
        # the options' old names, accepted for one release (the CLI warns about them)
        renamed = {k: v for k, v in (("position", position), ("supernet", supernet),
                                     ("remedy", remedy), ("remedy_weight", remedy_weight))
                   if v is not None}
        if renamed:
            new = {"position_encoding": position_encoding, "strategy": strategy,
                   "anti_collapse": anti_collapse, "anti_collapse_weight": anti_collapse_weight}
            defaults = _signature_defaults()
            given = {k: v for k, v in new.items() if v != defaults[k]}
            rename_options(renamed)
            for key, value in renamed.items():
                if key in given and given[key] != value:
                    raise ValueError(f"{key} is given under its old name too, with another "
                                     f"value ({value!r}, {given[key]!r}); give {key} only")
            position_encoding = renamed.get("position_encoding", position_encoding)
            strategy = renamed.get("strategy", strategy)
            anti_collapse = renamed.get("anti_collapse", anti_collapse)
            anti_collapse_weight = renamed.get("anti_collapse_weight", anti_collapse_weight)
        check_memory_format(memory_format)
        check_strategy(strategy)
        check_selection_options(select, select_val_batches, select_calib_batches,
                                select_finetune_steps, select_bn, cost_target, cost_min_width)
        if not isinstance(val_recalibrate, int) or isinstance(val_recalibrate, bool) \
                or val_recalibrate < 0:
            raise ValueError(f"val_recalibrate must be an integer >= 0, got {val_recalibrate!r}")
        if arch_order not in (1, 2):
            raise ValueError(f"arch_order must be 1 or 2, got {arch_order!r}")
        check_optimizer(optimizer)
        if anti_collapse not in ("none", "beta_decay", "entropy"):
            raise ValueError(f"unknown anti_collapse {anti_collapse!r}; accepted: none, "
                             f"beta_decay, entropy")
        if not isinstance(cost_weight, (int, float)) or not cost_weight >= 0:
            raise ValueError(f"cost_weight must be a number >= 0, got {cost_weight!r}")
        check_positive(lr=lr, arch_lr=arch_lr)
        check_nonnegative(lr_min=lr_min, weight_decay=weight_decay,
                          arch_weight_decay=arch_weight_decay, warmup_epochs=warmup_epochs,
                          grad_clip=grad_clip,
                          anti_collapse_weight=anti_collapse_weight)
        check_fraction(momentum=momentum)
        self.save_hyperparameters(ignore=list(RENAMED_OPTIONS))
        self.automatic_optimization = False
        #: (T, H, W) of the training clips, seen at the first step (saved in checkpoints)
        self.clip: tuple[int, int, int] | None = None
        self._space: SpaceCost | None = None
        self.acc = torch.nn.ModuleDict({
            k: MulticlassAccuracy(num_classes, average="micro")
            for k in ("train_w", "train_a", "val")
        })
        self._build()

    def _build(self) -> None:
        """Build the supernet and the training strategy from ``hparams`` (again after
        :meth:`on_load_checkpoint` migrated an old checkpoint's settings)."""
        hp = self.hparams
        self.model = create_backbone(
            hp.backbone, hp.num_classes, block="search", positions=hp.positions,
            block_kwargs={"num_nodes": hp.num_nodes, "inner_ratio": hp.inner_ratio,
                          "kv_pool": hp.kv_pool, "position": hp.position_encoding,
                          "candidate_norm": hp.candidate_norm},
            **(hp.backbone_kwargs or {}),
            **({"in_channels": hp.in_channels} if hp.in_channels != 3 else {}),
        )
        apply_layout(self.model, hp.memory_format, "cpu")  # LayoutHooks: device
        #: the training strategy (``hparams.strategy``), see :mod:`supernet.strategies`
        self.supernet_strategy: Strategy = get_strategy(hp.strategy)
        self.supernet_strategy.prepare(self)
        self._space = None
        self._recent: collections.deque = collections.deque(maxlen=hp.val_recalibrate or 1)

    # -- helpers -----------------------------------------------------------------------
    @property
    def arch(self):
        """The network's shared :class:`~supernet.cells.ArchParameters` (alpha, beta)."""
        return self.model.arch

    def forward(self, video: Tensor) -> Tensor:
        """``(N, 3, T, H, W)`` -> logits ``(N, num_classes)``."""
        return self.model(video)

    def cell_config(self) -> dict:
        """The searched cell's hyper-parameters (recorded in every genotype)."""
        hp = self.hparams
        return {"inner_ratio": hp.inner_ratio, "kv_pool": hp.kv_pool,
                "position": hp.position_encoding}

    def space_cost(self, clip: tuple[int, ...] | None = None) -> SpaceCost:
        """The cost model of this search's space (:class:`~supernet.costmodel.SpaceCost`)
        at the training clip (or ``clip`` ``(T, H, W)``); built once and cached."""
        clip = tuple(int(v) for v in (clip or self.clip or ()))
        if len(clip) != 3:
            raise ValueError("the cost of the cells needs the clip shape: no training batch "
                             "was seen and no clip was given")
        if self._space is None or self._space.clip != clip:
            hp = self.hparams
            kwargs = dict(hp.backbone_kwargs or {})
            if hp.in_channels != 3:
                kwargs["in_channels"] = hp.in_channels
            self._space = SpaceCost(hp.backbone, hp.positions, clip, hp.num_nodes,
                                    hp.inner_ratio, hp.kv_pool, hp.position_encoding, kwargs)
        return self._space

    def cost_budget(self, clip: tuple[int, ...] | None = None) -> CellBudget | None:
        """The selection's :class:`~supernet.costmodel.CellBudget` (None without a target);
        ``ValueError`` when the target is below the cheapest cell."""
        target = self.hparams.cost_target
        if target is None:
            return None
        space = self.space_cost(clip)
        return CellBudget(space, space.check_target(target), target,
                          min_width=float(self.hparams.cost_min_width))

    def _loss(self, batch: dict, key: str | None = None) -> Tensor:
        """Cross-entropy of a batch ``{"video": (N, C, T, H, W), "label": (N,)}`` (a
        scalar); updates accuracy ``key`` when given."""
        logits = self(batch["video"])
        loss = F.cross_entropy(logits, batch["label"])
        if key is not None:
            self.acc[key].update(logits.detach(), batch["label"])
        return loss

    def _check_finite(self, loss: Tensor, what: str, batch_idx: int) -> None:
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite {what} loss ({loss.item()}) at epoch {self.current_epoch}, "
                f"step {self.global_step} (batch {batch_idx}); "
                + ("the last good genotype is the one written at the end of the previous epoch"
                   if self.current_epoch > 0 else "no genotype was written yet (epoch 0)")
            )

    def _weight_lr(self) -> float:
        return float(self.optimizers()[0].param_groups[0]["lr"])

    # -- training ----------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        """One iteration: the strategy's architecture step (if any) on ``batch["arch"]``,
        then a weight step on ``batch["weights"]`` over the strategy's paths; returns the
        weight loss (a scalar)."""
        if not isinstance(batch, dict) or not {"weights", "arch"} <= set(batch):
            raise ValueError("search needs batches {'weights': ..., 'arch': ...}: "
                             "use VideoDataModule(search=True)")
        w_opt, a_opt = self.optimizers()
        bw, ba = batch["weights"], batch["arch"]
        hp = self.hparams
        n = bw["video"].shape[0]
        if self.clip is None:
            self.clip = tuple(int(v) for v in bw["video"].shape[2:])

        loss_a = self.supernet_strategy.arch_step(self, a_opt, bw, ba, batch_idx)
        if loss_a is not None:
            self.log("train_a/loss", loss_a, prog_bar=True, batch_size=n, sync_dist=True)

        if hp.val_recalibrate:
            self._recent.append(bw["video"].detach())
        w_opt.zero_grad(set_to_none=True)
        with self.supernet_strategy.weight_path(self, self.global_step):
            loss_w = self._loss(bw, "train_w")
            self._check_finite(loss_w, "weight", batch_idx)
            self.manual_backward(loss_w)
        for p in self.model.arch_parameters():  # the weight step never moves alpha/beta
            p.grad = None
        if hp.grad_clip > 0:
            self.clip_gradients(w_opt, gradient_clip_val=hp.grad_clip,
                                gradient_clip_algorithm="norm")
        w_opt.step()
        self.log("train_w/loss", loss_w, prog_bar=True, batch_size=n, sync_dist=True)
        return loss_w

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        # exact resume: the epoch's random draws and the batches validation recalibrates on
        # depend on the seed and the epoch only, not on what ran before (supernet.rng)
        if batch_idx == 0:
            seed_epoch(self.current_epoch)

    def on_train_epoch_start(self) -> None:
        self._recent.clear()
        t0, t1 = self.hparams.temperature
        if (t0, t1) != (1.0, 1.0):
            span = max(1, (self.trainer.max_epochs or 1) - 1)
            frac = min(1.0, self.current_epoch / span)
            self.arch.temperature.fill_(t0 + (t1 - t0) * frac)

    def on_train_epoch_end(self) -> None:
        for key in ("train_w", "train_a"):
            if self.acc[key].update_count:
                self.log(f"{key}/acc", self.acc[key].compute(), prog_bar=key == "train_a",
                         sync_dist=True)
            self.acc[key].reset()
        sch = self.lr_schedulers()
        if sch is not None:
            sch.step()
        self._check_ranks_agree()
        ops, ins = self.arch.op_weights().detach(), self.arch.input_weights().detach()
        self.log("arch/alpha_entropy", entropy_penalty(ops))
        self.log("arch/beta_entropy", entropy_penalty(ins[1:]) if len(ins) > 1 else 0.0)
        self.log("arch/alpha_max", ops.max(-1).values.mean())
        self.supernet_strategy.log_epoch(self)
        self.log("lr", self._weight_lr())

    def _check_ranks_agree(self) -> None:
        """Under DDP every rank must hold the same alpha/beta (the arch gradients are
        averaged); a divergence would silently derive different cells per rank."""
        if self.trainer.world_size <= 1:
            return
        flat = torch.cat([self.arch.alpha.detach().flatten(), self.arch.beta.detach().flatten()])
        gathered = self.all_gather(flat)
        divergence = (gathered - gathered[0]).abs().max()
        self.log("arch/rank_divergence", divergence, rank_zero_only=True)
        if divergence > 1e-5:
            raise RuntimeError(f"alpha/beta differ across DDP ranks by {float(divergence):.3g} "
                               f"at epoch {self.current_epoch}")

    # -- validation --------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        if self.hparams.val_recalibrate and self._recent:
            recalibrate_batchnorm(self.model, list(self._recent))

    def validation_step(self, batch: dict, batch_idx: int) -> Tensor:
        """Validation loss of a batch ``{"video": (N, C, T, H, W), "label": (N,)}``."""
        loss = self._loss(batch, "val")
        self.log("val/loss", loss, prog_bar=True, batch_size=batch["video"].shape[0],
                 sync_dist=True)
        return loss

    def on_validation_epoch_end(self) -> None:
        if self.acc["val"].update_count:
            self.log("val/acc", self.acc["val"].compute(), prog_bar=True, sync_dist=True)
        self.acc["val"].reset()

    # -- optimisers --------------------------------------------------------------------
    def configure_optimizers(self):
        """The weight optimiser (cosine schedule) and Adam on alpha/beta (which only a
        strategy that trains them steps)."""
        return search_optimizers(self.hparams, self.model.weight_parameters(),
                                 self.model.arch_parameters(), self.trainer.max_epochs)

    # -- checkpoints: exact resume (RNG streams), the strategy's record, migration ---------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        checkpoint["attnas_rng"] = {  # plain tensors/ints only: loadable with weights_only
            "torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": random.getstate(),
        }
        checkpoint["attnas_kind"] = "search"
        checkpoint["attnas_hparams_version"] = HPARAMS_VERSION
        self.supernet_strategy.record(self, checkpoint)
        if self.clip is not None:
            checkpoint["attnas_clip"] = list(self.clip)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Restore the clip and the RNG streams, and migrate an old checkpoint once: its
        ``hyper_parameters`` get the values it was trained with for every key it lacks
        (:func:`migrate_hparams`). Loaded outside a trainer
        (:meth:`~pytorch_lightning.LightningModule.load_from_checkpoint`), this module was
        built with the signature's defaults for those keys: it takes the legacy values and
        is rebuilt before the weights load. A keyword argument given to
        ``load_from_checkpoint`` for such a key is overridden, unless it differs from the
        signature's default; set selection settings on ``hparams`` after loading instead.
        Resumed by a trainer, the run's own settings stand."""
        if checkpoint.get("attnas_clip"):
            self.clip = tuple(int(v) for v in checkpoint["attnas_clip"])
        rng = checkpoint.get("attnas_rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            kind, keys, pos, has_gauss, gauss = rng["numpy"]
            np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
            random.setstate(rng["python"])
        version = checkpoint.get("attnas_hparams_version")
        saved = checkpoint.get("hyper_parameters")
        saved = dict(saved) if isinstance(saved, Mapping) else {}
        if (version or 0) >= HPARAMS_VERSION:
            if any(old in saved for old in RENAMED_OPTIONS):  # saved under the old names
                checkpoint["hyper_parameters"] = migrate_hparams(saved, version)
            return
        rename_options(saved)
        migrated = migrate_hparams(saved, version)
        checkpoint["hyper_parameters"] = migrated
        checkpoint["attnas_hparams_version"] = HPARAMS_VERSION
        if self._trainer is not None:
            return
        defaults = _signature_defaults()
        changed = {k: v for k, v in migrated.items()
                   if k not in saved and k in defaults and self.hparams.get(k) == defaults[k]
                   and v != defaults[k]}
        if changed:
            self.hparams.update(changed)
            self._build()


def _signature_defaults() -> dict[str, Any]:
    """The defaults of :class:`SearchModule`'s arguments."""
    return {name: p.default for name, p in inspect.signature(SearchModule.__init__).parameters
            .items() if p.default is not inspect.Parameter.empty}
