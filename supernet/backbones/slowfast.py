"""SlowFast-R50 (Feichtenhofer et al., ICCV 2019) as in PySlowFast / pytorchvideo's
``create_slowfast(model_depth=50)``, built on :mod:`.base` so attention blocks go into
either pathway through the one insertion path.

One clip ``(N, 3, T, H, W)`` goes in (T = the fast pathway's frames, 32 by default); the slow
pathway reads ``T / frame_ratio`` frames of it, evenly spaced (``frame_ratio`` = 4, SlowFast's
alpha, as pytorchvideo's ``PackPathway``)::

    slow  stem 1x7x7 conv /(1,2,2) 3->64, maxpool 1x3x3      res2..res5 (3, 4, 6, 3 blocks)
    fast  stem 5x7x7 conv /(1,2,2) 3->8,  maxpool 1x3x3      widths / beta (beta = 8)
    lateral after the stems and res2..res4: fast -> 7x1x1 conv stride (frame_ratio,1,1),
            channels x2, BN, ReLU, concatenated to the slow features
    head  global average pool of each pathway, concat (2048 + 256), dropout, linear

Temporal kernel 3 on the first conv of every fast block and of the slow res4 / res5 blocks
(1 in the slow res2 / res3). Reference (400 classes): **34,566,488 parameters; 50.31 GMACs**
for slow 1x3x8x224x224 + fast 1x3x32x224x224 (pytorchvideo's ``slowfast_r50``; tests check
both).

**Insertion positions**: slow stages ``res2`` .. ``res5``, fast stages ``fast_res2`` ..
``fast_res5`` (block indices as in I3D-R50). Default ``5blocks``: the non-local positions
of I3D-R50 in the slow pathway (res3 after 1, 3; res4 after 1, 3, 5) -- the pathway that
carries the semantics; ``fast5blocks`` puts them in the fast pathway instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..hparams import renamed_argument
from ..ops import check_video
from .base import BlockStage, VideoBackbone
from .resnet import Bottleneck

__all__ = ["SlowFast", "slowfast_r50", "SLOWFAST_PRESETS", "FUSIONS", "FUSION_SITES"]

#: fast -> slow fusion operators: ``tconv`` (time-strided k x 1 x 1 conv, BN, ReLU, channels
#: x ``fusion_ratio``, concatenated; SlowFast's default), ``tsample`` (the fast frames at the
#: slow pathway's times, concatenated), ``avgpool`` (average over each ``frame_ratio`` fast frames,
#: concatenated), ``sum`` (time-strided conv to the slow width, BN, added)
FUSIONS: tuple[str, ...] = ("tconv", "tsample", "avgpool", "sum")
#: where the fast -> slow fusions happen: lateral 0 joins the stems, 1..3 follow res2..res4
FUSION_SITES: dict[str, tuple[int, ...]] = {"all": (0, 1, 2, 3), "early": (0, 1),
                                            "late": (2, 3), "none": ()}

_DEPTHS = (3, 4, 6, 3)
_WIDTHS = (256, 512, 1024, 2048)
_INNER = (64, 128, 256, 512)

SLOWFAST_PRESETS: dict[str, dict[str, list[int]]] = {
    "none": {},
    "5blocks": {"res3": [1, 3], "res4": [1, 3, 5]},
    "fast5blocks": {"fast_res3": [1, 3], "fast_res4": [1, 3, 5]},
    "both": {"res3": [1, 3], "res4": [1, 3, 5], "fast_res3": [1, 3], "fast_res4": [1, 3, 5]},
}
SLOWFAST_PRESETS["default"] = SLOWFAST_PRESETS["5blocks"]


def _stem(cin: int, cout: int, kt: int, pool: bool = True) -> nn.Sequential:
    layers = [nn.Conv3d(cin, cout, (kt, 7, 7), (1, 2, 2), (kt // 2, 3, 3), bias=False),
              nn.BatchNorm3d(cout), nn.ReLU(inplace=True)]
    if pool:
        layers.append(nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)))
    return nn.Sequential(*layers)


class _Lateral(nn.Module):
    """One fast -> slow fusion (see :data:`FUSIONS`). ``extra`` is the channels it adds to
    the slow features (0 for ``sum``)."""

    def __init__(self, channels: int, slow_channels: int, ratio: int, frame_ratio: int,
                 kernel: int, op: str = "tconv") -> None:
        super().__init__()
        if op not in FUSIONS:
            raise ValueError(f"unknown fusion op {op!r}; accepted: {', '.join(FUSIONS)}")
        self.op, self.frame_ratio = op, frame_ratio
        self.conv = self.bn = self.relu = None
        if op in ("tconv", "sum"):
            out = channels * ratio if op == "tconv" else slow_channels
            self.conv = nn.Conv3d(channels, out, (kernel, 1, 1), (frame_ratio, 1, 1),
                                  (kernel // 2, 0, 0), bias=False)
            self.bn = nn.BatchNorm3d(out)
            self.relu = nn.ReLU(inplace=True) if op == "tconv" else None
        self.extra = {"tconv": channels * ratio, "tsample": channels, "avgpool": channels,
                      "sum": 0}[op]

    def fused(self, fast: Tensor, frame_ratio: int | None = None) -> Tensor:
        """What the fusion adds to the slow features: ``(N, extra, T / frame_ratio, H, W)``
        from the fast features ``(N, channels, T, H, W)`` (``sum``: ``(N, slow channels,
        ...)``, to be added). ``frame_ratio`` overrides the one the lateral was built for
        (the two-stream supernet varies it)."""
        ratio = int(frame_ratio or self.frame_ratio)
        if self.op == "tsample":
            t = fast.shape[2]
            idx = torch.linspace(0, t - 1, t // ratio, device=fast.device).long()
            return fast.index_select(2, idx)
        if self.op == "avgpool":
            return F.avg_pool3d(fast, (ratio, 1, 1))
        conv = self.conv
        y = self.bn(F.conv3d(fast, conv.weight, None, (ratio, 1, 1), conv.padding))
        return y if self.relu is None else self.relu(y)

    def forward(self, slow: Tensor, fast: Tensor) -> Tensor:
        """The slow features after the fusion."""
        y = self.fused(fast)
        if self.op == "sum":
            return slow + y
        return torch.cat([slow, y], 1)


def _stage(cin: int, inner: int, width: int, depth: int, kt: int, stride: int) -> BlockStage:
    blocks = [Bottleneck(cin if i == 0 else width, inner, width, kt, stride if i == 0 else 1)
              for i in range(depth)]
    return BlockStage(blocks, width)


class SlowFast(VideoBackbone):
    """A two-pathway 3-D ResNet with lateral connections (see the module docstring).

    Args:
        num_classes: size of the linear head.
        frame_ratio: frames of the fast pathway per frame of the slow one (SlowFast's
            alpha; the clip's T must be a multiple).
        beta_inv: channel ratio slow / fast (8: the fast pathway is 1/8 as wide).
        fusion_ratio: lateral output channels / fast channels (2).
        fusion_kernel: temporal kernel of the lateral convs (7).
        fusion: the fusion operator of every lateral connection (:data:`FUSIONS`).
        depths, in_channels, dropout: stage depths (R50: 3, 4, 6, 3), input channels (3
            RGB, 2 flow) and dropout before the head (0.5).
        width_div: divide every width by this (1 = SlowFast-R50; a proxy of the same family
            for CPU searches uses e.g. 8).
        slow_kt: temporal kernel of conv_a in the slow res4 / res5 blocks (3; res2 / res3
            keep 1, as in SlowFast).
        fast_kt: temporal kernel of conv_a in every fast block (3).
        fusion_at: which laterals exist (:data:`FUSION_SITES`: ``all`` = after the stems
            and res2..res4, ``early``, ``late``, ``none``).
        stem_pool: the stems' 1x3x3 max-pool (True, as SlowFast-R50; a proxy for small
            clips drops it to keep 4x the positions).
        alpha: deprecated name of ``frame_ratio`` (accepted for one release, with a
            ``DeprecationWarning``).

    Shapes: ``(N, in_channels, T, H, W)`` with ``T % frame_ratio == 0`` ->
    ``(N, num_classes)``.
    """

    def __init__(self, num_classes: int = 400, frame_ratio: int = 4, beta_inv: int = 8,
                 fusion_ratio: int = 2, fusion_kernel: int = 7,
                 depths: tuple[int, ...] = _DEPTHS, in_channels: int = 3,
                 dropout: float = 0.5, width_div: int = 1, fusion: str = "tconv",
                 slow_kt: int = 3, fast_kt: int = 3, fusion_at: str = "all",
                 stem_pool: bool = True, alpha: int | None = None) -> None:
        if alpha is not None:
            frame_ratio = renamed_argument("SlowFast", "alpha", "frame_ratio", alpha,
                                           frame_ratio, 4)
        super().__init__(num_classes, SLOWFAST_PRESETS, "5blocks",
                         "slowfast_r50" if width_div == 1 and tuple(depths) == _DEPTHS
                         else "slowfast")
        for name, value in (("frame_ratio", frame_ratio), ("beta_inv", beta_inv),
                            ("fusion_ratio", fusion_ratio), ("width_div", width_div)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name, value in (("fusion_kernel", fusion_kernel), ("slow_kt", slow_kt),
                            ("fast_kt", fast_kt)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1 \
                    or value % 2 == 0:
                raise ValueError(f"{name} must be an odd positive integer, got {value!r}")
        if fusion_at not in FUSION_SITES:
            raise ValueError(f"unknown fusion_at {fusion_at!r}; accepted: "
                             f"{', '.join(FUSION_SITES)}")
        if len(depths) != 4 or any(int(d) < 1 for d in depths):
            raise ValueError(f"depths must be four positive integers, got {depths!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.frame_ratio, self.in_channels = frame_ratio, int(in_channels)
        slow_w = [w // width_div for w in _WIDTHS]
        inner = [max(1, i // width_div) for i in _INNER]
        stem_w = 64 // width_div
        if min(slow_w) // beta_inv < 1 or stem_w // beta_inv < 1:
            raise ValueError(f"width_div={width_div} with beta_inv={beta_inv} leaves the fast "
                             f"pathway without channels")
        fast_w = [w // beta_inv for w in slow_w]
        self.slow_stem = _stem(in_channels, stem_w, 1, stem_pool)
        self.fast_stem = _stem(in_channels, stem_w // beta_inv, 5, stem_pool)
        lat_in = [stem_w // beta_inv, *fast_w[:3]]
        sites = FUSION_SITES[fusion_at]
        self.laterals = nn.ModuleDict({
            str(i): _Lateral(c, sw, fusion_ratio, frame_ratio, fusion_kernel, fusion)
            for i, (c, sw) in enumerate(zip(lat_in, [stem_w, *slow_w[:3]])) if i in sites})
        self.fusion, self.fusion_at = fusion, fusion_at
        slow_kts = (1, 1, slow_kt, slow_kt)

        def extra(i: int) -> int:
            return self.laterals[str(i)].extra if str(i) in self.laterals else 0

        slow_in = stem_w + extra(0)
        fast_in = stem_w // beta_inv
        for i, name in enumerate(("res2", "res3", "res4", "res5")):
            stride = 1 if i == 0 else 2
            self.stages[name] = _stage(slow_in, inner[i], slow_w[i], int(depths[i]),
                                       slow_kts[i], stride)
            self.stages[f"fast_{name}"] = _stage(fast_in, max(1, inner[i] // beta_inv),
                                                 fast_w[i], int(depths[i]), fast_kt,
                                                 stride)
            if i < 3:
                slow_in = slow_w[i] + extra(i + 1)
            fast_in = fast_w[i]
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.feature_dim = slow_w[-1] + fast_w[-1]
        self.head = nn.Linear(self.feature_dim, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn_c.weight)
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def pathways(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(slow, fast)`` of a clip ``(N, C, T, H, W)``: ``T / frame_ratio`` evenly spaced
        frames, and all ``T``."""
        t = x.shape[2]
        if t % self.frame_ratio:
            raise ValueError(f"SlowFast: the clip's {t} frames are not a multiple of "
                             f"frame_ratio={self.frame_ratio} (fast / slow frame ratio)")
        idx = torch.linspace(0, t - 1, t // self.frame_ratio, device=x.device).long()
        return x.index_select(2, idx), x

    def forward_features(self, x: Tensor) -> Tensor:
        """``(N, C, T, H, W)`` -> ``(N, slow width + fast width)``."""
        check_video(x, self.in_channels, "clip")
        slow, fast = self.pathways(x)
        slow, fast = self.slow_stem(slow), self.fast_stem(fast)
        slow = self.fuse(0, slow, fast)
        for i, name in enumerate(("res2", "res3", "res4", "res5")):
            slow, fast = self.stages[name](slow), self.stages[f"fast_{name}"](fast)
            if i < 3:
                slow = self.fuse(i + 1, slow, fast)
        return torch.cat([self.pool(slow).flatten(1), self.pool(fast).flatten(1)], 1)

    def fuse(self, site: int, slow: Tensor, fast: Tensor) -> Tensor:
        """The slow features after lateral ``site`` (unchanged where there is none)."""
        lateral = self.laterals[str(site)] if str(site) in self.laterals else None
        return slow if lateral is None else lateral(slow, fast)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, T, H, W)`` -> logits ``(N, num_classes)``."""
        return self.head(self.dropout(self.forward_features(x)))


def slowfast_r50(num_classes: int = 400, frame_ratio: int = 4, beta_inv: int = 8,
                 in_channels: int = 3, dropout: float = 0.5, width_div: int = 1,
                 depths: tuple[int, ...] = _DEPTHS, fusion: str = "tconv", slow_kt: int = 3,
                 fast_kt: int = 3, fusion_at: str = "all", stem_pool: bool = True,
                 alpha: int | None = None) -> SlowFast:
    """SlowFast-R50 8x8 (frame ratio 4, beta 1/8); ``width_div`` / ``depths`` make a
    smaller network of the same family (a two-stream proxy); ``frame_ratio``,
    ``beta_inv``, ``fusion``, ``fusion_at``, ``slow_kt`` and ``fast_kt`` are the variables
    of the two-stream search space (:mod:`supernet.twostream.space`). Every argument as in
    :class:`SlowFast` (``alpha``: the deprecated name of ``frame_ratio``)."""
    if alpha is not None:
        frame_ratio = renamed_argument("slowfast_r50", "alpha", "frame_ratio", alpha,
                                       frame_ratio, 4)
    return SlowFast(num_classes, frame_ratio=frame_ratio, beta_inv=beta_inv,
                    in_channels=in_channels, dropout=dropout, width_div=width_div,
                    depths=tuple(depths), fusion=fusion, slow_kt=slow_kt, fast_kt=fast_kt,
                    fusion_at=fusion_at, stem_pool=stem_pool)
