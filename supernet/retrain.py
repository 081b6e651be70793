"""Retrain: an ordinary video classifier with any attention block inserted.

Batches are dicts ``{"video": (N, 3, T, H, W) float, "label": (N,) int64,
"video_index": (N,) int64}``. Validation reports clip-level top-1/top-5; test also
averages the softmax scores of every view of a video (``video_index``) and reports
video-level top-1/top-5, as multi-view testing (e.g. 10 clips x 3 crops) does.
"""

from __future__ import annotations

import math
from typing import Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from .factory import create_backbone
from .hparams import check_fraction, check_nonnegative, check_positive
from .memory_format import LayoutHooks, apply_layout, check_memory_format
from .optim import check_optimizer, weight_optimizer
from .rng import seed_epoch
from .score_fusion import fuse, load_scores, save_scores

__all__ = ["VideoClassifier", "check_runtime"]

def check_runtime(memory_format: str, compile: bool, backend: str) -> None:
    """``ValueError`` (one line) for an unknown memory format, or ``compile`` on a torch
    without ``torch.compile`` or with an unknown backend."""
    check_memory_format(memory_format)
    if not compile:
        return
    if not hasattr(torch, "compile"):
        raise ValueError(f"--model.compile needs torch.compile, which torch {torch.__version__} "
                         f"does not have")
    from torch._dynamo import list_backends

    backends = list_backends(exclude_tags=())
    if backend not in backends:
        raise ValueError(f"unknown compile_backend {backend!r}; accepted: "
                         f"{', '.join(sorted(backends))}")


class VideoClassifier(LayoutHooks, pl.LightningModule):
    """Backbone + inserted blocks, trained with SGD, cosine schedule and linear warm-up.

    Args:
        num_classes: classes of the dataset (linked from the datamodule by the CLI).
        backbone: ``i3d_r50``, ``s3d`` or ``proxy``.
        block: ``none``, ``nonlocal``, ``nonlocal_dot``, ``a2``, ``cinst``, ``stinc``, or a
            genotype JSON file (a derived cell).
        positions: insertion positions (None = backbone default; ``5blocks``, ``10blocks``,
            or ``{"res3": [1, 3], "res4": [1, 3, 5]}``).
        block_kwargs: extra arguments for the block (e.g. ``{"position": "coords"}``).
        backbone_kwargs: extra arguments for the backbone (e.g. ``{"dropout": 0.5}``).
        pretrained_2d: a local torchvision-format ResNet-50 state dict to inflate (i3d_r50).
        pretrained: a local Kinetics-pretrained 3-D ResNet checkpoint (pytorchvideo,
            PySlowFast, mmaction2 or attnas layout; :mod:`supernet.pretrained`); the head
            is not loaded, inserted blocks start as identities.
        pretrained_format: ``auto`` (detected from the keys), ``pytorchvideo``,
            ``pyslowfast``, ``mmaction2`` or ``attnas``.
        optimizer: ``sgd`` (momentum, Nesterov) or ``adamw``.
        lr: peak learning rate (after warm-up), cosine-annealed to ``lr_min``.
        lr_min: final learning rate.
        momentum: SGD momentum.
        weight_decay: weight decay (not applied to biases and norm parameters).
        warmup_epochs: linear warm-up epochs (fractional allowed; 0 = none).
        label_smoothing: cross-entropy label smoothing.
        in_channels: input channels (linked from ``data.modality`` by the CLI: 3 for RGB
            and RGB difference, 2 for optical flow).
        memory_format: ``auto`` (default: ``channels_last`` on the CPU, where
            ``benchmarks/memory_format_speed.py`` measured it faster per step; ``contiguous``
            elsewhere), ``contiguous`` or ``channels_last`` (``channels_last_3d`` weights;
            oneDNN / cuDNN pick channels-last kernels). :mod:`supernet.memory_format`.
        compile: run the network through ``torch.compile`` (compiled on the first step;
            the checkpoint keeps the plain module's keys). Measured in ``benchmarks/gpu.py
            --compile off,on``: on CPU the first step compiles for about a minute.
        compile_backend: ``torch.compile`` backend (``inductor``; ``eager`` only traces --
            a quick check that the model compiles).
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "proxy",
        block: str = "none",
        positions: str | dict[str, list[int]] | None = None,
        block_kwargs: dict | None = None,
        backbone_kwargs: dict | None = None,
        pretrained_2d: str | None = None,
        pretrained: str | None = None,
        pretrained_format: str = "auto",
        optimizer: Literal["sgd", "adamw"] = "sgd",
        lr: float = 0.05,
        lr_min: float = 0.0,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        warmup_epochs: float = 0.0,
        label_smoothing: float = 0.0,
        in_channels: int = 3,
        memory_format: Literal["auto", "contiguous", "channels_last"] = "auto",
        compile: bool = False,
        compile_backend: str = "inductor",
    ) -> None:
        super().__init__()
        check_optimizer(optimizer)
        check_runtime(memory_format, compile, compile_backend)
        check_positive(lr=lr)
        check_nonnegative(lr_min=lr_min, weight_decay=weight_decay, warmup_epochs=warmup_epochs)
        check_fraction(momentum=momentum, label_smoothing=label_smoothing)
        if lr_min > lr:
            raise ValueError(f"lr_min {lr_min} is more than lr {lr}")
        self.save_hyperparameters()
        kwargs = dict(backbone_kwargs or {})
        if in_channels != 3:
            kwargs["in_channels"] = in_channels
        if pretrained_2d:
            kwargs["pretrained_2d"] = pretrained_2d
        if pretrained:
            kwargs.update(pretrained=pretrained, pretrained_format=pretrained_format)
        self.model = create_backbone(backbone, num_classes, block=block, positions=positions,
                                     block_kwargs=block_kwargs, **kwargs)
        # the CPU's layout now (a module is built there); LayoutHooks re-applies it on the
        # device once fit / test / predict starts
        apply_layout(self.model, memory_format, "cpu")
        self._compiled = None  # built on the first forward (not a submodule: same ckpt keys)
        top5 = min(5, num_classes)
        self.metrics = torch.nn.ModuleDict({
            f"{stage}_top{k}": MulticlassAccuracy(num_classes, top_k=k, average="micro")
            for stage in ("train", "val", "test") for k in (1, top5)
        })
        self._topk = (1, top5)
        self._video_scores: dict[int, Tensor] = {}
        #: set by ``attnas retrain test``: where this run's per-video scores go, and the
        #: scores files of other runs to fuse with (:mod:`supernet.score_fusion`)
        self.scores_path: str | None = None
        self.fuse_scores: list[str] = []
        self._video_labels: dict[int, int] = {}
        self._warned_nonfinite: set[str] = set()
        self._nonfinite: dict[str, Tensor | int] = {}  # this epoch's count per eval stage

    def forward(self, video: Tensor) -> Tensor:
        """``(N, 3, T, H, W)`` -> logits ``(N, num_classes)``."""
        if not self.hparams.get("compile", False):
            return self.model(video)
        if self._compiled is None:
            object.__setattr__(self, "_compiled", torch.compile(
                self.model, backend=self.hparams.get("compile_backend", "inductor")))
        try:
            return self._compiled(video)
        except Exception as err:  # noqa: BLE001 - any compiler failure is the same user error
            if "dynamo" not in type(err).__module__ and "inductor" not in type(err).__module__:
                raise
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"torch.compile failed on this machine ({first[:200]}); run "
                             f"without --model.compile") from None

    def _shared_step(self, batch: dict, stage: str) -> tuple[Tensor, Tensor]:
        """Loss and logits ``(N, num_classes)`` of one batch; logs loss and top-k.

        A non-finite training loss stops the run (``FloatingPointError``): the weights are
        gone. In val/test a clip whose logits are not finite (an unnormalised cell can
        overflow with BatchNorm's running statistics where the batch statistics of training
        kept it finite) is counted as an error: its logits become ``-onehot(label)``, so it
        misses top-1 and adds a bounded loss; ``{stage}/nonfinite`` logs how many there were
        and the first epoch with any warns once per stage (:meth:`_warn_nonfinite`)."""
        logits = self(batch["video"])
        labels = batch["label"]
        n = batch["video"].shape[0]
        if stage != "train":  # no host sync here: the count is read at the epoch's end
            bad = ~torch.isfinite(logits).all(dim=1)
            wrong = -F.one_hot(labels, logits.shape[1]).to(logits.dtype)
            logits = torch.where(bad[:, None], wrong, logits)
            n_bad = bad.sum()
            self._nonfinite[stage] = self._nonfinite.get(stage, 0) + n_bad
            self.log(f"{stage}/nonfinite", n_bad.float(), batch_size=n, reduce_fx="sum",
                     on_step=False, on_epoch=True, sync_dist=True)
        loss = F.cross_entropy(logits, labels,
                               label_smoothing=self.hparams.label_smoothing if stage == "train"
                               else 0.0)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite {stage} loss ({loss.item()}) at epoch {self.current_epoch}, "
                f"step {self.global_step}")
        self.log(f"{stage}/loss", loss, prog_bar=stage != "test", batch_size=n, sync_dist=True)
        for k in self._topk:
            m = self.metrics[f"{stage}_top{k}"]
            m.update(logits.detach(), labels)
            self.log(f"{stage}/top{k}", m, prog_bar=k == 1, batch_size=n,
                     on_step=False, on_epoch=True)
        return loss, logits

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")[0]

    def validation_step(self, batch: dict, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "val")[0]

    def test_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss, logits = self._shared_step(batch, "test")
        if "video_index" in batch:
            probs = logits.detach().float().softmax(-1).cpu()
            for i, vi in enumerate(batch["video_index"].tolist()):
                if vi in self._video_scores:
                    self._video_scores[vi] += probs[i]
                else:
                    self._video_scores[vi] = probs[i].clone()
                    self._video_labels[vi] = int(batch["label"][i])
        return loss

    def _warn_nonfinite(self, stage: str) -> None:
        """Warn (once per stage) if this epoch had clips with non-finite logits; reset."""
        count = int(self._nonfinite.pop(stage, 0))
        if count and stage not in self._warned_nonfinite:
            self._warned_nonfinite.add(stage)
            rank_zero_warn(f"{count} {stage} clips gave non-finite logits at epoch "
                           f"{self.current_epoch}; they count as errors ({stage}/nonfinite "
                           f"logs how many)")

    def on_validation_epoch_end(self) -> None:
        self._warn_nonfinite("val")

    def on_test_epoch_start(self) -> None:
        self._video_scores, self._video_labels = {}, {}

    def on_test_epoch_end(self) -> None:
        """Video-level top-k: per-video averaged scores, gathered over DDP ranks."""
        self._warn_nonfinite("test")
        if not self._video_scores:
            return
        idx = torch.tensor(sorted(self._video_scores), dtype=torch.long)
        scores = torch.stack([self._video_scores[i] for i in idx.tolist()])
        labels = torch.tensor([self._video_labels[i] for i in idx.tolist()])
        if self.trainer.world_size > 1:
            # every rank saw a different subset of views: sum scores per video over ranks
            n_local = torch.tensor([len(idx)], device=self.device)
            n_max = int(self.all_gather(n_local).max())
            pad = n_max - len(idx)
            idx_p = F.pad(idx, (0, pad), value=-1).to(self.device)
            sc_p = F.pad(scores, (0, 0, 0, pad)).to(self.device)
            lb_p = F.pad(labels, (0, pad), value=-1).to(self.device)
            all_idx = self.all_gather(idx_p).reshape(-1).cpu()
            all_sc = self.all_gather(sc_p).reshape(-1, scores.shape[1]).cpu()
            all_lb = self.all_gather(lb_p).reshape(-1).cpu()
            keep = all_idx >= 0
            all_idx, all_sc, all_lb = all_idx[keep], all_sc[keep], all_lb[keep]
            uniq, inv = torch.unique(all_idx, return_inverse=True)
            scores = torch.zeros(len(uniq), all_sc.shape[1]).index_add_(0, inv, all_sc)
            labels = torch.zeros(len(uniq), dtype=torch.long).scatter_(0, inv, all_lb)
        for k in self._topk:
            top = scores.topk(k, dim=-1).indices
            acc = (top == labels[:, None]).any(-1).float().mean()
            # every rank holds the same gathered value: the mean over ranks is that value
            self.log(f"test/video_top{k}", acc, sync_dist=True)
        self.log("test/videos", float(len(labels)), sync_dist=True)
        self._late_fusion(idx if self.trainer.world_size <= 1 else uniq, scores, labels)

    def _late_fusion(self, idx: Tensor, scores: Tensor, labels: Tensor) -> None:
        """Save this run's per-video scores; average them with ``fuse_scores`` files and
        log ``test/fused_video_top{k}`` (two-stream late fusion)."""
        if not self.scores_path and not self.fuse_scores:
            return
        modality = str(getattr(self.trainer.datamodule, "modality", "rgb"))
        if self.scores_path and self.trainer.is_global_zero:
            save_scores(self.scores_path, idx.cpu(), scores.cpu(), labels.cpu(), modality)
        if not self.fuse_scores:
            return
        order = torch.argsort(idx.cpu())
        probs = scores.cpu()[order].float()
        own = {"video_index": idx.cpu()[order], "labels": labels.cpu()[order],
               "scores": probs / probs.sum(-1, keepdim=True).clamp_min(1e-12),
               "num_classes": int(scores.shape[1])}
        fused = fuse(own, [load_scores(p) for p in self.fuse_scores], self.fuse_scores)
        for k in self._topk:
            top = fused.topk(k, dim=-1).indices
            acc = (top == own["labels"][:, None]).any(-1).float().mean()
            self.log(f"test/fused_video_top{k}", acc, sync_dist=True)

    def configure_optimizers(self):
        hp = self.hparams
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        groups = [{"params": decay, "weight_decay": hp.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        opt = weight_optimizer(groups, hp.optimizer, hp.lr, hp.momentum,
                               nesterov=hp.momentum > 0)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        epochs = max(1, self.trainer.max_epochs or 1)
        warm = int(round(hp.warmup_epochs * total / epochs))
        floor = hp.lr_min / hp.lr if hp.lr > 0 else 0.0

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            t = (step - warm) / max(1, total - warm)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        if batch_idx == 0:  # exact resume: after the epoch's loader exists (supernet.rng)
            seed_epoch(self.current_epoch)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["attnas_kind"] = "retrain"
