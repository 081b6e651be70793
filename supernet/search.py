"""The search LightningModule: trains the weight-sharing supernet, manual optimisation.

Every training step takes a batch dict ``{"weights": batch, "arch": batch}`` (the two
disjoint halves of the training set, see ``datamodules.VideoDataModule(search=True)``);
each half's batch is ``{"video": (N, 3, T, H, W) float, "label": (N,) int64, ...}``.

Three ways to train the supernet (``supernet=``):

* ``darts`` -- bi-level DARTS:
  1. architecture step on the ``arch`` batch: Adam on alpha/beta only, first order by
     default (``autograd.grad`` on alpha/beta alone: no weight gradient is computed and
     thrown away), or the unrolled second-order gradient (``arch_order=2``); skipped during
     the first ``warmup_epochs``;
  2. weight step on the ``weights`` batch (SGD/AdamW + cosine schedule, clipping), never
     touching alpha/beta.
* ``uniform`` -- alpha/beta frozen at exactly uniform: every candidate trains with the same
  weight, an iteration is one weight step (the ``arch`` half is not used for training).
* ``single_path`` -- single-path one-shot: each step samples one candidate and one input
  per node uniformly (the same path for every cell position and every DDP rank, drawn from
  ``(seed, step)``), pins it and trains only that path's weights.

The cell is then chosen by a selection rule of ``derive.select`` (``select=``), run at the
end of ``fit`` by the search CLI; this module only stores the rule's name and options.
"""

from __future__ import annotations

import collections
import random
from typing import Literal

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from .cells import check_bn_mode, recalibrate_batchnorm
from .costmodel import CellBudget, SpaceCost, check_min_width, parse_cost_target
from .darts import arch_gradient, beta_decay_penalty, entropy_penalty
from .factory import create_backbone
from .hparams import check_fraction, check_nonnegative, check_positive
from .layout import LayoutHooks, apply_layout, check_memory_format
from .optim import check_optimizer, search_optimizers
from .rng import run_seed, seed_epoch
from .space import NUM_OPS

__all__ = ["SearchModule", "SUPERNET_MODES"]

#: how the supernet is trained (see the module docstring)
SUPERNET_MODES: tuple[str, ...] = ("darts", "uniform", "single_path")


class SearchModule(LayoutHooks, pl.LightningModule):
    """Supernet search on a proxy backbone.

    The defaults are the DARTS reference settings (``darts`` + ``argmax``, SGD, position
    ``none``, recalibrated BatchNorm), which round 1 measured *not* to select in a short
    search; the settings the benchmark measured best are in
    ``configs/search/synthetic.yaml`` (``uniform`` + ``perturb``, ``sincos``, AdamW,
    ``select_bn: batch``, 5 epochs): start a new config from that file.

    Args:
        num_classes: classes of the dataset (linked from the datamodule by the CLI).
        backbone: backbone name for :func:`supernet.create_backbone` (default ``proxy``).
        positions: insertion positions (None = the backbone's default), see create_backbone.
        num_nodes: K, operation nodes per cell (default 3).
        inner_ratio: cell inner width / channels (default 0.5).
        kv_pool: max-pool dot-product keys/values 1x2x2 (default True).
        position: positional signal for dot-product ops: none | coords | sincos.
        candidate_norm: every mixed edge weighs each candidate by the inverse of its
            output's scale on the batch, so the mixture (and the scores of the selection
            rules) compare the candidates on one scale (default False).
        backbone_kwargs: extra keyword arguments for the backbone (e.g. proxy widths).
        optimizer: weight optimiser, ``sgd`` (momentum; DARTS) or ``adamw``.
        lr: weight learning rate (cosine-annealed to ``lr_min`` over ``max_epochs``).
        lr_min: final weight learning rate.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        arch_lr: Adam learning rate for alpha/beta (DARTS: 3e-4).
        arch_betas: Adam betas (DARTS: (0.5, 0.999)).
        arch_weight_decay: Adam weight decay on alpha/beta (DARTS: 1e-3).
        arch_order: 1 (first order) or 2 (unrolled second order).
        warmup_epochs: epochs with alpha/beta frozen at the start.
        grad_clip: max gradient norm of the weight step (0 disables).
        remedy: anti-collapse term added to the architecture loss: ``none``,
            ``beta_decay`` (beta-DARTS logsumexp regulariser on alpha) or ``entropy``
            (entropy of softmax(alpha) and of the input weights).
        remedy_weight: weight of the remedy term (beta-DARTS ramps it linearly over the
            epochs after warm-up, as its paper does; entropy uses it as is).
        temperature: (start, end) softmax temperature on alpha, annealed linearly over the
            search epochs (``(1.0, 1.0)`` = off).
        supernet: ``darts`` (bi-level, alpha learned), ``uniform`` (alpha frozen uniform,
            weight steps only) or ``single_path`` (one uniformly sampled path per step).
        select: the selection rule that derives the cell at the end of the search (a name
            of ``derive.select.SELECTION_RULES``: ``argmax``, ``perturb``,
            ``perturb_factors``, ``alone``).
        select_val_batches: validation batches a data-driven rule scores on.
        select_calib_batches: training batches that recalibrate BatchNorm statistics before
            each score.
        select_finetune_steps: weight steps after each decision (0 = none).
        select_bn: BatchNorm while a data-driven rule scores: ``recalibrate`` (running
            statistics recomputed on ``select_calib_batches`` training batches before each
            score) or ``batch`` (each validation batch normalised by its own statistics,
            as in training).
        val_recalibrate: before every validation, BatchNorm statistics are recomputed on
            this many of the latest training batches (0 = keep the running averages). The
            running averages of a supernet mix many networks; evaluated as they are, a
            search of ours showed a validation loss of 6e21 with a training loss of 0.78.
        cost_target: a budget on the MACs of the inserted cells per clip (None = none):
            GMACs (``0.05``), a ratio of the non-local blocks at the same positions
            (``"0.5x"``, ``"1x"``), a block name (``"a2"``) or a ratio of one (``"2xa2"``);
            see :mod:`supernet.costmodel`. The selection rule then only picks choices that
            keep the cell within it and fits the cell's inner width to it; with
            ``supernet="darts"`` the architecture loss also gets ``cost_weight *
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
            ``benchmarks/layout.py`` measured training steps 1.0-1.3x faster; contiguous
            elsewhere), ``contiguous`` or ``channels_last``. :mod:`supernet.layout`.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "proxy",
        positions: str | dict[str, list[int]] | None = None,
        num_nodes: int = 3,
        inner_ratio: float = 0.5,
        kv_pool: bool = True,
        position: str = "none",
        backbone_kwargs: dict | None = None,
        optimizer: Literal["sgd", "adamw"] = "sgd",
        lr: float = 0.05,
        lr_min: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 3e-4,
        arch_lr: float = 3e-4,
        arch_betas: tuple[float, float] = (0.5, 0.999),
        arch_weight_decay: float = 1e-3,
        arch_order: int = 1,
        warmup_epochs: int = 0,
        grad_clip: float = 5.0,
        remedy: Literal["none", "beta_decay", "entropy"] = "none",
        remedy_weight: float = 0.0,
        temperature: tuple[float, float] = (1.0, 1.0),
        supernet: str = "darts",
        select: str = "argmax",
        select_val_batches: int = 8,
        select_calib_batches: int = 4,
        select_finetune_steps: int = 0,
        select_bn: str = "recalibrate",
        val_recalibrate: int = 4,
        cost_target: str | float | None = None,
        cost_weight: float = 1.0,
        cost_min_width: float = 0.0,
        in_channels: int = 3,
        memory_format: str = "auto",
        candidate_norm: bool = False,
    ) -> None:
        super().__init__()
        check_memory_format(memory_format)
        if supernet not in SUPERNET_MODES:
            raise ValueError(f"unknown supernet mode {supernet!r}; accepted: "
                             f"{', '.join(SUPERNET_MODES)}")
        if not isinstance(select, str) or not select:
            raise ValueError(f"select must be a selection rule name, got {select!r}")
        check_bn_mode(select_bn, "select_bn")
        for name, value, low in (("select_val_batches", select_val_batches, 1),
                                 ("select_calib_batches", select_calib_batches, 0),
                                 ("select_finetune_steps", select_finetune_steps, 0),
                                 ("val_recalibrate", val_recalibrate, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if arch_order not in (1, 2):
            raise ValueError(f"arch_order must be 1 or 2, got {arch_order!r}")
        check_optimizer(optimizer)
        if remedy not in ("none", "beta_decay", "entropy"):
            raise ValueError(f"unknown remedy {remedy!r}; accepted: none, beta_decay, entropy")
        if cost_target is not None:
            parse_cost_target(cost_target)
        if not isinstance(cost_weight, (int, float)) or not cost_weight >= 0:
            raise ValueError(f"cost_weight must be a number >= 0, got {cost_weight!r}")
        check_min_width(cost_min_width)
        check_positive(lr=lr, arch_lr=arch_lr)
        check_nonnegative(lr_min=lr_min, weight_decay=weight_decay,
                          arch_weight_decay=arch_weight_decay, warmup_epochs=warmup_epochs,
                          grad_clip=grad_clip, remedy_weight=remedy_weight)
        check_fraction(momentum=momentum)
        self.save_hyperparameters()
        self.automatic_optimization = False
        #: (T, H, W) of the training clips, seen at the first step (saved in checkpoints)
        self.clip: tuple[int, int, int] | None = None
        self._space: SpaceCost | None = None
        self._budget: CellBudget | None = None
        self.model = create_backbone(
            backbone, num_classes, block="search", positions=positions,
            block_kwargs={"num_nodes": num_nodes, "inner_ratio": inner_ratio,
                          "kv_pool": kv_pool, "position": position,
                          "candidate_norm": candidate_norm},
            **(backbone_kwargs or {}), **({"in_channels": in_channels} if in_channels != 3 else {}),
        )
        apply_layout(self.model, memory_format, "cpu")  # LayoutHooks: device
        if supernet != "darts":  # exactly uniform and never trained
            with torch.no_grad():
                self.arch.alpha.zero_()
                self.arch.beta.zero_()
            for p in self.model.arch_parameters():
                p.requires_grad_(False)
        self._recent: collections.deque = collections.deque(maxlen=val_recalibrate or 1)
        self.acc = torch.nn.ModuleDict({
            k: MulticlassAccuracy(num_classes, average="micro")
            for k in ("train_w", "train_a", "val")
        })

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
        return {"inner_ratio": hp.inner_ratio, "kv_pool": hp.kv_pool, "position": hp.position}

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
            if hp.get("in_channels", 3) != 3:
                kwargs["in_channels"] = hp.in_channels
            self._space = SpaceCost(hp.backbone, hp.positions, clip, hp.num_nodes,
                                    hp.inner_ratio, hp.kv_pool, hp.position, kwargs)
        return self._space

    def cost_budget(self, clip: tuple[int, ...] | None = None) -> CellBudget | None:
        """The selection's :class:`~supernet.costmodel.CellBudget` (None without a target);
        ``ValueError`` when the target is below the cheapest cell."""
        target = self.hparams.get("cost_target")
        if target is None:
            return None
        space = self.space_cost(clip)
        return CellBudget(space, space.check_target(target), target,
                          min_width=float(self.hparams.get("cost_min_width", 0.0)))

    def _cost_term(self) -> Tensor:
        hp = self.hparams
        if hp.get("cost_target") is None or not hp.get("cost_weight", 1.0):
            return self.arch.alpha.new_zeros(())
        if self._budget is None:
            self._budget = self.cost_budget()
            # the target at the supernet's width: a budget below the cheapest cell there is
            # met by narrowing the derived cell (CellBudget.fit); alpha is pushed to the
            # cheapest ops, not toward an expected cost it cannot reach
            self._arch_target = max(self._budget.target, self._budget.space.cheapest())
        budget = self._budget
        expected = budget.space.expected_macs(self.arch.op_weights())
        return hp.cost_weight * F.relu(expected / self._arch_target - 1.0)

    def _loss(self, batch: dict, key: str | None = None) -> Tensor:
        logits = self(batch["video"])
        loss = F.cross_entropy(logits, batch["label"])
        if key is not None:
            self.acc[key].update(logits.detach(), batch["label"])
        return loss

    def _remedy(self) -> Tensor:
        hp = self.hparams
        if hp.remedy == "none" or hp.remedy_weight == 0.0:
            return self.arch.alpha.new_zeros(())
        if hp.remedy == "beta_decay":
            span = max(1, (self.trainer.max_epochs or 1) - hp.warmup_epochs)
            ramp = min(1.0, (self.current_epoch - hp.warmup_epochs + 1) / span)
            return hp.remedy_weight * ramp * beta_decay_penalty(self.arch.alpha)
        return hp.remedy_weight * (entropy_penalty(self.arch.op_weights())
                                   + entropy_penalty(self.arch.input_weights()[1:]))

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
        if not isinstance(batch, dict) or not {"weights", "arch"} <= set(batch):
            raise ValueError("search needs batches {'weights': ..., 'arch': ...}: "
                             "use VideoDataModule(search=True)")
        w_opt, a_opt = self.optimizers()
        bw, ba = batch["weights"], batch["arch"]
        hp = self.hparams
        n = bw["video"].shape[0]
        if self.clip is None:
            self.clip = tuple(int(v) for v in bw["video"].shape[2:])

        if hp.get("supernet", "darts") == "darts" and self.current_epoch >= hp.warmup_epochs:
            loss_a = self._arch_step(a_opt, bw, ba, batch_idx)
            self.log("train_a/loss", loss_a, prog_bar=True, batch_size=n, sync_dist=True)

        if hp.val_recalibrate:
            self._recent.append(bw["video"].detach())
        if hp.get("supernet", "darts") == "single_path":
            self.arch.set_restrictions(self.sample_path(self.global_step))
        w_opt.zero_grad(set_to_none=True)
        try:
            loss_w = self._loss(bw, "train_w")
            self._check_finite(loss_w, "weight", batch_idx)
            self.manual_backward(loss_w)
        finally:
            if hp.get("supernet", "darts") == "single_path":
                self.arch.clear_restrictions()
        for p in self.model.arch_parameters():  # the weight step never moves alpha/beta
            p.grad = None
        if hp.grad_clip > 0:
            self.clip_gradients(w_opt, gradient_clip_val=hp.grad_clip,
                                gradient_clip_algorithm="norm")
        w_opt.step()
        self.log("train_w/loss", loss_w, prog_bar=True, batch_size=n, sync_dist=True)
        return loss_w

    def _arch_step(self, a_opt, bw: dict, ba: dict, batch_idx: int) -> Tensor:
        """One Adam step on alpha/beta; returns the architecture-half loss."""
        hp = self.hparams
        arch = self.model.arch_parameters()
        a_opt.zero_grad()
        if hp.arch_order == 1:
            # gradients of alpha/beta only: autograd skips every weight gradient
            loss_a = self._loss(ba, "train_a")
            self._check_finite(loss_a, "architecture", batch_idx)
            grads = torch.autograd.grad(loss_a + self._remedy() + self._cost_term(), arch,
                                        allow_unused=True)
            grads = [torch.zeros_like(p) if g is None else g for p, g in zip(arch, grads)]
        else:
            weights = [p for p in self.model.weight_parameters() if p.requires_grad]
            losses = []

            def val_loss() -> Tensor:
                loss = self._loss(ba)
                losses.append(loss.detach())
                return loss + self._remedy() + self._cost_term()

            grads = arch_gradient(lambda: self._loss(bw), val_loss, weights, arch, order=2,
                                  xi=self._weight_lr(), weight_decay=hp.weight_decay)
            loss_a = losses[0]
            self._check_finite(loss_a, "architecture", batch_idx)
            with torch.no_grad():
                self.acc["train_a"].update(self(ba["video"]), ba["label"])
        self._all_reduce_(grads)
        for p, g in zip(arch, grads):
            p.grad = g
        a_opt.step()
        return loss_a.detach()

    def path_seed(self) -> int:
        """The base seed of single-path sampling (the run's seed, else 0)."""
        return run_seed()

    def sample_path(self, step: int) -> tuple[Tensor, Tensor]:
        """The single path of training step ``step``: one op and one input per node, drawn
        uniformly from a generator seeded by ``(seed, step)`` (so a resume, every cell and
        every DDP rank see the same path). Returns ``(op_mask, in_mask)`` bool masks for
        :meth:`ArchParameters.set_restrictions`."""
        k = self.arch.num_nodes
        gen = torch.Generator().manual_seed(self.path_seed() * 1_000_003 + int(step))
        ops = torch.randint(NUM_OPS, (k,), generator=gen)
        op_mask = torch.zeros(k, NUM_OPS, dtype=torch.bool)
        op_mask[torch.arange(k), ops] = True
        in_mask = torch.zeros(k, k, dtype=torch.bool)
        for node in range(k):
            in_mask[node, int(torch.randint(node + 1, (1,), generator=gen))] = True
        return op_mask, in_mask

    def _all_reduce_(self, grads: list[Tensor]) -> None:
        """Average hand-computed arch gradients over DDP ranks (manual_backward does it
        for the first-order path)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world = torch.distributed.get_world_size()
            for g in grads:
                torch.distributed.all_reduce(g)
                g.div_(world)

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
        if self._budget is not None:
            self.log("arch/expected_mmacs", float(self._budget.space.expected_macs(ops)) / 1e6)
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
        return search_optimizers(self.hparams, self.model.weight_parameters(),
                                 self.model.arch_parameters(), self.trainer.max_epochs)

    # -- exact resume: the RNG streams travel with the checkpoint -------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        checkpoint["attnas_rng"] = {  # plain tensors/ints only: loadable with weights_only
            "torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": random.getstate(),
        }
        checkpoint["attnas_kind"] = "search"
        checkpoint["attnas_supernet"] = self.hparams.get("supernet", "darts")
        if self.clip is not None:
            checkpoint["attnas_clip"] = list(self.clip)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if checkpoint.get("attnas_clip"):
            self.clip = tuple(int(v) for v in checkpoint["attnas_clip"])
        rng = checkpoint.get("attnas_rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            kind, keys, pos, has_gauss, gauss = rng["numpy"]
            np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
            random.setstate(rng["python"])

