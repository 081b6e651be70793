"""One stage of the progressive two-stream search, as a LightningModule.

Stage ``streams`` searches the streams (frame_ratio, beta_inv, slow_kt, fast_kt) with SlowFast's
fusion and ``base_attention`` (``none`` by default; the shipped config uses ``nonlocal``:
without attention the supernets stayed at chance); ``fusion`` the fusion operator and
sites with the streams of stage 1 fixed (``previous=`` its architecture file);
``attention`` the attention block and pathway with both fixed. Each stage trains an
:class:`~.elastic.ElasticTwoStream` in one of the cell search's supernet modes and ends
(in the CLI, :class:`derive.callbacks.TwoStreamWriter`) with one of its selection rules,
which writes the stage's architecture file. Batches as in
:class:`supernet.search.SearchModule`: ``{"weights": batch, "arch": batch}``, each
``{"video": (N, C, T, H, W), "label": (N,)}``.
"""

from __future__ import annotations

import collections
import time
from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from ..cells import check_bn_mode, recalibrate_batchnorm
from ..genotype import load_genotype
from ..hparams import check_fraction, check_nonnegative, check_positive
from ..memory_format import LayoutHooks, apply_layout, check_memory_format
from ..optim import check_optimizer, search_optimizers
from ..rng import run_seed, seed_epoch
from .budget import TwoStreamBudget, parse_twostream_target
from .elastic import ElasticTwoStream, StageChoices
from .space import (
    RENAMED_VARIABLES,
    STAGES,
    VARIABLES,
    TwoStreamArch,
    load_arch,
    variables_of,
)

__all__ = ["TwoStreamSearch", "stage_fixed_values"]

_MODES = ("darts", "uniform", "single_path")


def stage_fixed_values(stage: str, previous: TwoStreamArch | None,
                       base_attention: str = "none") -> dict[str, Any]:
    """The values a stage holds fixed: earlier stages' from ``previous``, later stages'
    SlowFast defaults (attention: ``base_attention``, in the slow pathway). ``ValueError``
    when ``previous`` has not decided every variable of the earlier stages (a stage run
    without the previous stage's result)."""
    order = STAGES.index(stage)
    earlier = [v.name for v in VARIABLES if STAGES.index(v.stage) < order]
    if earlier and previous is None:
        raise ValueError(f"stage {stage!r} needs the result of stage "
                         f"{STAGES[order - 1]!r} (--model.previous ARCH.json)")
    missing = [n for n in earlier if previous is not None and n not in previous.decided]
    if missing:
        raise ValueError(f"stage {stage!r} needs {', '.join(missing)} decided by an earlier "
                         f"stage; the --model.previous file decided "
                         f"{', '.join(previous.decided) or 'nothing'}")
    if base_attention not in ("none", "nonlocal", "a2"):
        raise ValueError(f"unknown base_attention {base_attention!r}; accepted: none, "
                         f"nonlocal, a2")
    base = TwoStreamArch.create().values
    if stage != "attention":
        base["attention"] = base_attention
    if previous is not None:
        base.update({n: previous.values[n] for n in earlier})
    return base


class TwoStreamSearch(LayoutHooks, pl.LightningModule):
    """One stage of the progressive two-stream search (after Auto-TSNet).

    Args:
        num_classes: classes of the dataset (linked from the datamodule by the CLI).
        stage: ``streams`` | ``fusion`` | ``attention``.
        previous: the previous stage's architecture file (required from ``fusion`` on).
        attention_cell: a genotype file for attention value ``cell`` (None: the stage
            searches none / nonlocal / a2 only).
        width_div: width divisor of the SlowFast family (8: the CPU proxy).
        depths: blocks per stage res2..res5 ((1, 1, 1, 1)).
        dropout: before the head (0.5).
        stem_pool: the stems' max-pool (True: SlowFast-R50's; the config's 24x24 proxy
            drops it).
        base_attention: the attention block present while ``streams`` and ``fusion``
            search (``none``, as Auto-TSNet's order has it, or ``nonlocal`` / ``a2`` in the
            slow pathway: on data only attention can solve, a supernet without it stays at
            chance and every decision is a coin toss -- measured on the synthetic
            benchmark). The ``attention`` stage searches the block itself either way.
        supernet: ``darts`` (logits learned, first order), ``uniform`` (every value mixed
            with the same weight, weight steps only) or ``single_path`` (one value per
            variable per step, uniformly).
        select: a rule of ``derive.select.SELECTION_RULES``.
        select_val_batches, select_calib_batches, select_bn: as in the cell search.
        optimizer, lr, lr_min, momentum, weight_decay, grad_clip: the weight step (cosine
            schedule over the epochs).
        arch_lr, arch_betas, arch_weight_decay: Adam on the stage's logits (darts).
        val_recalibrate: BatchNorm statistics recomputed on this many recent training
            batches before every validation (0: keep the running averages).
        out: also write the stage's architecture file here (the run folder always gets
            ``twostream_<stage>.json``).
        in_channels: input channels (linked from ``data.modality``).
        cost_target: a budget on the searched network's MACs per clip (None = none):
            GMACs (``0.02``), a ratio of SlowFast's point at the same network size and clip
            (``1x``, ``0.8x``) or ``slowfast`` (= ``1x``). The stage's selection only takes
            values with which the network can still meet it, the later stages' variables
            counted at the values this stage holds them (see
            :class:`supernet.twostream.budget.TwoStreamBudget`); a budget no network of the stage
            can meet is refused before training.
        cost_weight: under ``darts``, the weight of the expected-cost term added to the
            architecture loss, ``cost_weight * relu(E[MACs] / target - 1)`` (E over the
            stage's softmax weights, exact; as the cell search's term): the logits move
            toward values that keep the network within the budget. 0: the budget acts at
            selection only (always the case under ``uniform`` / ``single_path``).
        memory_format: ``auto`` (default: channels-last-3d weights on the CPU, where
            ``benchmarks/memory_format_speed.py`` measured training steps faster; contiguous
            elsewhere), ``contiguous`` or ``channels_last``. :mod:`supernet.memory_format`.
    """

    def __init__(self, num_classes: int, stage: str = "streams", previous: str | None = None,
                 attention_cell: str | None = None, width_div: int = 8,
                 depths: tuple[int, int, int, int] = (1, 1, 1, 1), dropout: float = 0.5,
                 stem_pool: bool = True, base_attention: str = "none",
                 supernet: str = "uniform", select: str = "alone",
                 select_val_batches: int = 8, select_calib_batches: int = 4,
                 select_bn: str = "batch",
                 optimizer: Literal["sgd", "adamw"] = "adamw", lr: float = 2e-3,
                 lr_min: float = 2e-5, momentum: float = 0.9, weight_decay: float = 3e-4,
                 grad_clip: float = 5.0, arch_lr: float = 3e-3,
                 arch_betas: tuple[float, float] = (0.5, 0.999),
                 arch_weight_decay: float = 1e-3, val_recalibrate: int = 4,
                 out: str | None = None, in_channels: int = 3,
                 cost_target: str | float | None = None, cost_weight: float = 1.0,
                 memory_format: str = "auto") -> None:
        super().__init__()
        check_memory_format(memory_format)
        if cost_target is not None:
            parse_twostream_target(cost_target)
        if supernet not in _MODES:
            raise ValueError(f"unknown supernet mode {supernet!r}; accepted: "
                             f"{', '.join(_MODES)}")
        if not isinstance(select, str) or not select:  # the rule is checked by the CLI
            raise ValueError(f"select must be a selection rule name, got {select!r}")
        check_bn_mode(select_bn, "select_bn")
        check_optimizer(optimizer)
        check_positive(lr=lr, arch_lr=arch_lr)
        check_nonnegative(lr_min=lr_min, weight_decay=weight_decay, grad_clip=grad_clip,
                          arch_weight_decay=arch_weight_decay)
        check_fraction(momentum=momentum, dropout=dropout)
        free = variables_of(stage)
        prev = load_arch(previous) if previous else None
        fixed = stage_fixed_values(stage, prev, base_attention)
        cell_doc, cell = None, None
        if stage == "attention" and attention_cell:
            cell = load_genotype(attention_cell)
            cell_doc = cell.to_dict() if hasattr(cell, "to_dict") else None
        exclude = {"attention": ("cell",)} if cell is None else {}
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.previous = prev
        self.cell_doc = cell_doc
        self.choices = StageChoices(fixed, free, exclude)
        self.model = ElasticTwoStream(num_classes, self.choices, width_div, tuple(depths),
                                      in_channels, dropout, cell, stem_pool)
        apply_layout(self.model, memory_format, "cpu")  # LayoutHooks: device
        if supernet != "darts":
            for p in self.model.arch_parameters():
                p.requires_grad_(False)
        self.clip: tuple[int, int, int] | None = None
        self._budget: TwoStreamBudget | None = None  # see cost_budget
        #: seconds spent in training epochs (kept in checkpoints: a resumed stage adds on)
        self.train_seconds = 0.0
        self._epoch_t0: float | None = None
        self._recent: collections.deque = collections.deque(maxlen=val_recalibrate or 1)
        self.acc = torch.nn.ModuleDict({k: MulticlassAccuracy(num_classes, average="micro")
                                        for k in ("train_w", "val")})

    def cost_budget(self, clip: tuple[int, int, int] | None = None) -> TwoStreamBudget | None:
        """The selection's :class:`~supernet.twostream.budget.TwoStreamBudget` at ``clip``
        (``(T, H, W)``; default: the clip seen in training) or None without a target;
        ``ValueError`` when no network of this stage meets the target."""
        hp = self.hparams
        if hp.get("cost_target") is None:
            return None
        clip = clip if clip is not None else self.clip
        if clip is None:
            raise ValueError("the cost budget needs the clip size (no batch seen yet)")
        if self._budget is not None and self._budget.clip == tuple(clip):
            return self._budget  # counted once: the check before training, darts, selection
        budget = TwoStreamBudget(hp.cost_target, {"width_div": hp.width_div,
                                                  "depths": list(hp.depths),
                                                  "stem_pool": hp.stem_pool},
                                 tuple(clip), self.model.net.head.out_features,
                                 hp.in_channels, self.cell_doc)
        budget.check(self.choices.values,
                     {n: self.choices.candidates(n) for n in self.choices.free})
        self._budget = budget
        return budget

    def cost_term(self) -> Tensor:
        """The architecture objective's expected-cost term (a scalar; 0 without a budget or
        with ``cost_weight`` 0): ``cost_weight * relu(E[MACs] / target - 1)``."""
        hp = self.hparams
        first = next(iter(self.choices.logits.values()), None)
        zero = torch.zeros((), device=None if first is None else first.device)
        if hp.get("cost_target") is None or not hp.get("cost_weight", 1.0):
            return zero
        budget = self.cost_budget()
        free = {n: self.choices.candidates(n) for n in self.choices.free}
        weights = {n: self.choices.weights(n) for n in free}
        expected = budget.expected_macs(self.choices.values, free, weights)
        return hp.cost_weight * F.relu(expected / budget.target - 1.0)

    def forward(self, video: Tensor) -> Tensor:
        """``(N, C, T, H, W)`` -> logits ``(N, num_classes)``."""
        return self.model(video)

    def _loss(self, batch: dict, key: str | None = None) -> Tensor:
        logits = self(batch["video"])
        if key is not None:
            self.acc[key].update(logits.detach(), batch["label"])
        return F.cross_entropy(logits, batch["label"])

    def _generator(self, step: int, stream: int = 0) -> torch.Generator:
        """A generator seeded by ``(seed, step, stream)``: resumes and DDP ranks agree."""
        return torch.Generator().manual_seed((run_seed() * 1_000_003 + int(step)) * 2 + stream)

    def sample_path(self, step: int) -> dict[str, list[int]]:
        """The single path of step ``step``: one value per searched variable, drawn
        uniformly from a generator seeded by ``(seed, step)`` (resumes and DDP ranks agree);
        restrictions for :meth:`StageChoices.set_restrictions`."""
        gen = self._generator(step)
        out = self.choices.restrictions()
        for name in self.choices.free:
            n = len(self.choices.candidates(name))
            out[name] = [int(torch.randint(n, (1,), generator=gen))]
        return out

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        if not isinstance(batch, dict) or not {"weights", "arch"} <= set(batch):
            raise ValueError("search needs batches {'weights': ..., 'arch': ...}: "
                             "use VideoDataModule(search=True)")
        w_opt, a_opt = self.optimizers()
        bw, ba = batch["weights"], batch["arch"]
        hp = self.hparams
        if self.clip is None:
            self.clip = tuple(int(v) for v in bw["video"].shape[2:])
        self.model.generator = self._generator(self.global_step, 1)  # frame_ratio's draw
        if hp.supernet == "darts":
            a_opt.zero_grad()
            loss_a = self._loss(ba)
            if hp.get("cost_target") is not None:
                cost = self.cost_term()
                self.log("train_a/cost", cost.detach(), batch_size=ba["video"].shape[0])
                loss_a = loss_a + cost
            params = self.model.arch_parameters()
            grads = torch.autograd.grad(loss_a, params, allow_unused=True)
            dist = torch.distributed
            world = dist.get_world_size() if dist.is_available() and dist.is_initialized() \
                else 1
            for p, g in zip(params, grads):
                p.grad = torch.zeros_like(p) if g is None else g
                if world > 1:  # autograd.grad bypasses DDP's reducer: average by hand
                    dist.all_reduce(p.grad)
                    p.grad.div_(world)
            a_opt.step()
            self.model.generator = self._generator(self.global_step, 1)  # the same draw
            self.log("train_a/loss", loss_a.detach(), prog_bar=True,
                     batch_size=ba["video"].shape[0])
        if hp.val_recalibrate:
            self._recent.append(bw["video"].detach())
        saved = self.choices.restrictions()
        if hp.supernet == "single_path":
            self.choices.set_restrictions(self.sample_path(self.global_step))
        w_opt.zero_grad(set_to_none=True)
        try:
            loss = self._loss(bw, "train_w")
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite weight loss ({loss.item()}) at epoch "
                                         f"{self.current_epoch}, step {self.global_step}")
            self.manual_backward(loss)
        finally:
            self.choices.set_restrictions(saved)
        for p in self.model.arch_parameters():
            p.grad = None
        if hp.grad_clip > 0:
            self.clip_gradients(w_opt, gradient_clip_val=hp.grad_clip,
                                gradient_clip_algorithm="norm")
        w_opt.step()
        self.log("train_w/loss", loss.detach(), prog_bar=True, batch_size=bw["video"].shape[0])
        return loss

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        if batch_idx == 0:  # exact resume: after the epoch's loader exists (supernet.rng)
            seed_epoch(self.current_epoch)

    def on_train_epoch_start(self) -> None:
        self._recent.clear()
        self._epoch_t0 = time.perf_counter()

    def on_train_epoch_end(self) -> None:
        if self._epoch_t0 is not None:
            self.train_seconds += time.perf_counter() - self._epoch_t0
            self._epoch_t0 = None
        if self.acc["train_w"].update_count:
            self.log("train_w/acc", self.acc["train_w"].compute())
        self.acc["train_w"].reset()
        sch = self.lr_schedulers()
        if sch is not None:
            sch.step()
        for name in self.choices.free:
            w = self.choices.weights(name).detach()
            self.log(f"arch/{name}_max", w.max())

    def on_validation_epoch_start(self) -> None:
        if self.hparams.val_recalibrate and self._recent:
            recalibrate_batchnorm(self.model, list(self._recent))

    def validation_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss = self._loss(batch, "val")
        self.log("val/loss", loss, prog_bar=True, batch_size=batch["video"].shape[0])
        return loss

    def on_validation_epoch_end(self) -> None:
        if self.acc["val"].update_count:
            self.log("val/acc", self.acc["val"].compute(), prog_bar=True)
        self.acc["val"].reset()

    def configure_optimizers(self):
        return search_optimizers(self.hparams, self.model.weight_parameters(),
                                 self.model.arch_parameters(), self.trainer.max_epochs)

    def check_clip(self, frames: int) -> None:
        """Before training: every allowed frame ratio must divide the clip's frames."""
        ratios = self.choices.candidates("frame_ratio")
        bad = [r for r in ratios if frames % int(r)]
        if bad:
            raise ValueError(f"the clip's --data.num_frames {frames} is not a multiple of the "
                             f"fast/slow frame ratio {bad[0]} this stage may choose "
                             f"(frame_ratio in {', '.join(map(str, ratios))})")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["attnas_kind"] = "search"
        checkpoint["attnas_supernet"] = self.hparams.supernet
        checkpoint["attnas_stage"] = self.hparams.stage
        checkpoint["attnas_train_seconds"] = float(self.train_seconds)
        if self.clip is not None:
            checkpoint["attnas_clip"] = list(self.clip)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Restore the search seconds and the clip; a checkpoint saved before
        ``alpha`` was renamed ``frame_ratio`` gets its logits' new key."""
        state = checkpoint.get("state_dict")
        if isinstance(state, dict):
            for key in [k for k in state if k.rpartition(".")[0].endswith("choices.logits")]:
                head, _, name = key.rpartition(".")
                if name in RENAMED_VARIABLES:
                    state[f"{head}.{RENAMED_VARIABLES[name]}"] = state.pop(key)
        self.train_seconds = float(checkpoint.get("attnas_train_seconds", 0.0))
        if checkpoint.get("attnas_clip"):
            self.clip = tuple(int(v) for v in checkpoint["attnas_clip"])
