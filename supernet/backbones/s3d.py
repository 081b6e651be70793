"""S3D: the separable Inception-v1 3-D network (Xie et al., ECCV 2018, "Rethinking
Spatiotemporal Feature Learning"), with the gated S3D-G variant as an option.

Every 3-D conv of I3D's Inception-v1 is factorised into a ``1 x k x k`` spatial conv and a
``k x 1 x 1`` temporal conv (each with BN and ReLU); 1x1x1 convs stay as they are::

    stem    sep 7x7x7 /(2,2,2) 3->64, maxpool 1x3x3 /(1,2,2), 1x1x1 64->64,
            sep 3x3x3 64->192, maxpool 1x3x3 /(1,2,2)
    mixed3  Inception 3b, 3c                      (28x28 at a 224 crop)
    mixed4  maxpool 3x3x3 /2, Inception 4b .. 4f  (14x14)
    mixed5  maxpool 2x2x2 /2, Inception 5b, 5c    (7x7)
    head    global average pool, dropout, linear 1024 -> classes

An Inception block concatenates four branches: 1x1x1; 1x1x1 -> sep 3x3x3; 1x1x1 -> sep
3x3x3; 3x3x3 max-pool -> 1x1x1. Widths as in the paper (and torchvision's ``s3d``, whose
400-class model has 8,320,048 parameters, matched exactly here; BatchNorm eps 1e-3).
S3D-G (``gated=True``) multiplies the output of every separable conv by a feature gate
``sigmoid(W avgpool(x) + b)`` (one ``C x C`` linear map per gate), as the paper's S3D-G.

**Insertion positions** index the Inception blocks of ``mixed3`` (2), ``mixed4`` (5) and
``mixed5`` (2). Default ``5blocks``: after 3b and 3c (28x28) and after 4b, 4d and 4f (14x14).
This mirrors the non-local "5 blocks" of I3D-R50 -- two blocks at the 28x28 stage, three
spread over the 14x14 stage, none at 7x7 where attention over 49 positions adds little --
so the attention blocks see the same resolutions in both backbones.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..ops import check_video
from .base import BlockStage, VideoBackbone

__all__ = ["S3D", "s3d", "S3D_PRESETS", "InceptionBlock", "SepConv3d"]

_BN_EPS = 1e-3

S3D_PRESETS: dict[str, dict[str, list[int]]] = {
    "none": {},
    "5blocks": {"mixed3": [0, 1], "mixed4": [0, 2, 4]},
    "all": {"mixed3": [0, 1], "mixed4": [0, 1, 2, 3, 4]},
}
S3D_PRESETS["default"] = S3D_PRESETS["5blocks"]

#: (name, in, branch0, branch1 mid, branch1 out, branch2 mid, branch2 out, branch3)
_INCEPTION = {
    "mixed3": [("3b", 192, 64, 96, 128, 16, 32, 32), ("3c", 256, 128, 128, 192, 32, 96, 64)],
    "mixed4": [("4b", 480, 192, 96, 208, 16, 48, 64), ("4c", 512, 160, 112, 224, 24, 64, 64),
               ("4d", 512, 128, 128, 256, 24, 64, 64), ("4e", 512, 112, 144, 288, 32, 64, 64),
               ("4f", 528, 256, 160, 320, 32, 128, 128)],
    "mixed5": [("5b", 832, 256, 160, 320, 32, 128, 128),
               ("5c", 832, 384, 192, 384, 48, 128, 128)],
}


def _unit(cin: int, cout: int, kernel: Sequence[int], stride: Sequence[int] = (1, 1, 1),
          padding: Sequence[int] = (0, 0, 0)) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, tuple(kernel), tuple(stride), tuple(padding),
                                   bias=False),
                         nn.BatchNorm3d(cout, eps=_BN_EPS), nn.ReLU(inplace=True))


class _Gate(nn.Module):
    """S3D-G feature gating: ``x * sigmoid(W mean_{t,h,w}(x) + b)`` per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        g = torch.sigmoid(self.fc(x.mean(dim=(2, 3, 4))))
        return x * g[:, :, None, None, None]


class SepConv3d(nn.Module):
    """``1 x k x k`` spatial conv (stride ``(1, s, s)``) then ``kt x 1 x 1`` temporal conv
    (stride ``(st, 1, 1)``), each with BN + ReLU; an S3D-G gate after them if ``gated``.
    ``(N, C_in, T, H, W)`` -> ``(N, C_out, T / st, H / s, W / s)`` (rounded up)."""

    def __init__(self, cin: int, cout: int, k: int = 3, s: int = 1, kt: int = 3, st: int = 1,
                 gated: bool = False) -> None:
        super().__init__()
        self.spatial = _unit(cin, cout, (1, k, k), (1, s, s), (0, k // 2, k // 2))
        self.temporal = _unit(cout, cout, (kt, 1, 1), (st, 1, 1), (kt // 2, 0, 0))
        self.gate = _Gate(cout) if gated else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.temporal(self.spatial(x))
        return x if self.gate is None else self.gate(x)


class InceptionBlock(nn.Module):
    """A separable Inception block; output channels ``b0 + b1 + b2 + b3``."""

    def __init__(self, cin: int, b0: int, b1_mid: int, b1: int, b2_mid: int, b2: int,
                 b3: int, gated: bool = False) -> None:
        super().__init__()
        self.branch0 = _unit(cin, b0, (1, 1, 1))
        self.branch1 = nn.Sequential(_unit(cin, b1_mid, (1, 1, 1)),
                                     SepConv3d(b1_mid, b1, gated=gated))
        self.branch2 = nn.Sequential(_unit(cin, b2_mid, (1, 1, 1)),
                                     SepConv3d(b2_mid, b2, gated=gated))
        self.branch3 = nn.Sequential(nn.MaxPool3d(3, 1, 1), _unit(cin, b3, (1, 1, 1)))
        self.out_channels = b0 + b1 + b2 + b3

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x),
                          self.branch3(x)], 1)


class S3D(VideoBackbone):
    """S3D / S3D-G with blocks inserted after chosen Inception blocks.

    Args:
        num_classes: size of the linear head.
        gated: S3D-G feature gating after every separable conv.
        dropout: dropout before the head (default 0.2, as torchvision's).
        in_channels: input channels (3 for RGB; 2 for optical flow).

    Shapes: ``(N, in_channels, T, H, W)`` -> ``(N, num_classes)``; any ``T, H, W >= 1``
    (the last pooling rounds up, so a short or small clip still reaches the head).
    """

    def __init__(self, num_classes: int = 400, gated: bool = False, dropout: float = 0.2,
                 in_channels: int = 3) -> None:
        super().__init__(num_classes, S3D_PRESETS, "5blocks", "s3d_g" if gated else "s3d")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.in_channels = int(in_channels)
        self.gated = bool(gated)
        self.stem = nn.Sequential(
            SepConv3d(in_channels, 64, k=7, s=2, kt=7, st=2, gated=gated),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            _unit(64, 64, (1, 1, 1)),
            SepConv3d(64, 192, gated=gated),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
        )
        pre = {"mixed3": None,
               "mixed4": nn.MaxPool3d(3, 2, 1),
               "mixed5": nn.MaxPool3d(2, 2, 0, ceil_mode=True)}
        channels = 192
        for stage, specs in _INCEPTION.items():
            blocks = []
            for _, cin, *widths in specs:
                assert cin == channels, (stage, cin, channels)
                block = InceptionBlock(cin, *widths, gated=gated)
                blocks.append(block)
                channels = block.out_channels
            self.stages[stage] = BlockStage(blocks, channels, pre[stage])
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels, num_classes)
        self.feature_dim = channels

    splittable = True

    def forward_features(self, x: Tensor) -> Tensor:
        """``(N, C, T, H, W)`` -> pooled features ``(N, 1024)``."""
        check_video(x, self.in_channels, "clip")
        x = self.stem(x)
        for stage in self.stages.values():
            x = stage(x)
        return self.pool(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, T, H, W)`` -> logits ``(N, num_classes)``."""
        return self.head(self.dropout(self.forward_features(x)))


def s3d(num_classes: int = 400, gated: bool = False, dropout: float = 0.2,
        in_channels: int = 3) -> S3D:
    """S3D (``gated=False``, 8,320,048 parameters at 400 classes) or S3D-G; default
    insertion preset ``5blocks`` (see the module docstring)."""
    return S3D(num_classes, gated=gated, dropout=dropout, in_channels=in_channels)
