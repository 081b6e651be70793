"""3-D ResNet backbones (I3D-R50 and a small proxy), built on :mod:`.base`.

One class, :class:`VideoResNet`, serves both: a stem (``kt x k x k`` conv, BN, ReLU, optional
1x3x3 max-pool), bottleneck stages with per-block temporal kernels on the first 1x1 conv
(I3D "inflation"), an optional temporal max-pool 2 after the first stage, global average
pooling, dropout and a linear head. Input ``(N, 3, T, H, W)``, output logits
``(N, num_classes)``. Insertion positions index the bottlenecks of a stage (see
:func:`~supernet.backbones.base.resolve_positions`).

Reference figures (I3D-R50, 400 classes): 28,043,472 parameters, 28.41 GMACs at
1x3x8x224x224; with the non-local "5 blocks" 35,401,936 parameters, 36.54 GMACs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from ..ops import PointwiseConv3d, check_video
from .base import BlockStage, VideoBackbone

__all__ = [
    "StageConfig",
    "Bottleneck",
    "Stage",
    "VideoResNet",
    "i3d_r50",
    "proxy",
    "I3D_PRESETS",
    "PROXY_PRESETS",
    "proxy_presets",
]


@dataclass(frozen=True)
class StageConfig:
    """One bottleneck stage.

    Attributes:
        name: stage name used by insertion positions (``res2`` ...).
        width: output channels of every block.
        inner: bottleneck width (channels of the 1x3x3 conv).
        temporal_kernels: temporal kernel of each block's first 1x1 conv (its length is
            the stage depth; 3 = inflated, 1 = not).
        spatial_stride: stride of the first block's 1x3x3 conv (and its shortcut).
    """

    name: str
    width: int
    inner: int
    temporal_kernels: tuple[int, ...]
    spatial_stride: int

    @property
    def depth(self) -> int:
        return len(self.temporal_kernels)


class Bottleneck(nn.Module):
    """``relu(BN(conv_c(relu(BN(conv_b(relu(BN(conv_a(x)))))))) + shortcut(x))``.

    conv_a ``kt x 1 x 1`` (C_in -> inner), conv_b ``1 x 3 x 3`` stride ``(1, s, s)``,
    conv_c ``1 x 1 x 1`` (inner -> C_out), BN after each, the last BN's gamma at 0; the
    shortcut is a strided 1x1x1 conv + BN when the shape changes.
    ``(N, C_in, T, H, W)`` -> ``(N, C_out, T, ceil(H/s), ceil(W/s))``.
    """

    def __init__(self, in_channels: int, inner: int, out_channels: int,
                 temporal_kernel: int = 1, spatial_stride: int = 1) -> None:
        super().__init__()
        kt = temporal_kernel
        s = spatial_stride
        # 1x1x1 convs (stride 1) are PointwiseConv3d: the same parameters, one bmm on CPU
        if kt == 1:
            self.conv_a: nn.Conv3d = PointwiseConv3d(in_channels, inner, bias=False)
        else:
            self.conv_a = nn.Conv3d(in_channels, inner, (kt, 1, 1), padding=(kt // 2, 0, 0),
                                    bias=False)
        self.bn_a = nn.BatchNorm3d(inner)
        self.conv_b = nn.Conv3d(inner, inner, (1, 3, 3), stride=(1, s, s), padding=(0, 1, 1),
                                bias=False)
        self.bn_b = nn.BatchNorm3d(inner)
        self.conv_c = PointwiseConv3d(inner, out_channels, bias=False)
        self.bn_c = nn.BatchNorm3d(out_channels)
        self.shortcut: nn.Module | None = None
        if in_channels != out_channels or s != 1:
            self.shortcut = nn.Sequential(
                PointwiseConv3d(in_channels, out_channels, bias=False) if s == 1 else
                nn.Conv3d(in_channels, out_channels, 1, stride=(1, s, s), bias=False),
                nn.BatchNorm3d(out_channels),
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        y = self.relu(self.bn_a(self.conv_a(x)))
        y = self.relu(self.bn_b(self.conv_b(y)))
        y = self.bn_c(self.conv_c(y))
        # in place: BatchNorm's backward does not need its output
        y += x if self.shortcut is None else self.shortcut(x)
        return self.relu(y)


class Stage(BlockStage):
    """Bottleneck blocks (``blocks``) and the blocks inserted after some of them
    (``inserted``, keyed by the index as a string)."""

    def __init__(self, in_channels: int, cfg: StageConfig) -> None:
        blocks = []
        for i, kt in enumerate(cfg.temporal_kernels):
            blocks.append(Bottleneck(in_channels if i == 0 else cfg.width, cfg.inner,
                                     cfg.width, kt, cfg.spatial_stride if i == 0 else 1))
        super().__init__(blocks, cfg.width)
        self.cfg = cfg


class VideoResNet(VideoBackbone):
    """A 3-D bottleneck ResNet (I3D family) with blocks inserted after chosen bottlenecks.

    Args:
        num_classes: size of the linear head.
        stages: the bottleneck stages, in order.
        stem_width: channels of the stem conv.
        stem_kernel: ``(kt, k, k)`` of the stem conv (stride ``(1, 2, 2)``, "same" padding).
        stem_pool: 1x3x3 max-pool, stride ``(1, 2, 2)``, after the stem.
        temporal_pool_after: stage name after which T is max-pooled by 2 (``None``: never).
        dropout: dropout before the head.
        presets: named insertion-position sets; ``default_positions`` names the default.
        name: backbone name (for reprs and errors).
        in_channels: input channels (3 for RGB, 2 for optical flow).

    Shapes: ``(N, in_channels, T, H, W)`` -> ``(N, num_classes)``.
    """

    def __init__(self, num_classes: int, stages: Sequence[StageConfig], *, stem_width: int = 64,
                 stem_kernel: tuple[int, int, int] = (5, 7, 7), stem_pool: bool = True,
                 temporal_pool_after: str | None = "res2", dropout: float = 0.5,
                 presets: Mapping[str, Mapping[str, Sequence[int]]] | None = None,
                 default_positions: str = "none", name: str = "video_resnet",
                 in_channels: int = 3) -> None:
        super().__init__(num_classes, presets, default_positions, name)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        names = [s.name for s in stages]
        if temporal_pool_after is not None and temporal_pool_after not in names:
            raise ValueError(f"temporal_pool_after={temporal_pool_after!r} is not a stage "
                             f"({', '.join(names)})")
        self.stage_configs = tuple(stages)
        self.stem_kernel = tuple(stem_kernel)
        self.stem_pool = bool(stem_pool)
        self.temporal_pool_after = temporal_pool_after
        kt, kh, kw = stem_kernel
        self.stem = nn.Sequential()
        self.in_channels = int(in_channels)
        self.stem.add_module("conv", nn.Conv3d(self.in_channels, stem_width, stem_kernel,
                                               stride=(1, 2, 2),
                                               padding=(kt // 2, kh // 2, kw // 2), bias=False))
        self.stem.add_module("bn", nn.BatchNorm3d(stem_width))
        self.stem.add_module("relu", nn.ReLU(inplace=True))
        if stem_pool:
            self.stem.add_module("pool", nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)))
        channels = stem_width
        for cfg in stages:
            self.stages[cfg.name] = Stage(channels, cfg)
            channels = cfg.width
        self.temporal_pool = nn.MaxPool3d((2, 1, 1), (2, 1, 1))
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels, num_classes)
        self.feature_dim = channels
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn_c.weight)
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    # -- structure -----------------------------------------------------------------------
    def stage_depths(self) -> dict[str, int]:
        """``{stage name: number of bottlenecks}``."""
        return {cfg.name: cfg.depth for cfg in self.stage_configs}

    def receptive_field(self) -> tuple[int, int, int]:
        """Receptive field ``(frames, pixels, pixels)`` of one output position of the last
        stage through convolutions and pooling only (inserted blocks excluded)."""
        rf = [1, 1, 1]
        jump = [1, 1, 1]

        def layer(kernel: Sequence[int], stride: Sequence[int]) -> None:
            for a in range(3):
                rf[a] += (kernel[a] - 1) * jump[a]
                jump[a] *= stride[a]

        layer(self.stem_kernel, (1, 2, 2))
        if self.stem_pool:
            layer((1, 3, 3), (1, 2, 2))
        for cfg in self.stage_configs:
            for i, kt in enumerate(cfg.temporal_kernels):
                s = cfg.spatial_stride if i == 0 else 1
                layer((kt, 1, 1), (1, 1, 1))
                layer((1, 3, 3), (1, s, s))
            if cfg.name == self.temporal_pool_after:
                layer((2, 1, 1), (2, 1, 1))
        return rf[0], rf[1], rf[2]

    # -- forward -------------------------------------------------------------------------
    splittable = True

    def _after_stage(self, name: str, x: Tensor) -> Tensor:
        if name == self.temporal_pool_after and x.shape[2] >= 2:
            x = self.temporal_pool(x)
        return x

    def forward_features(self, x: Tensor) -> Tensor:
        """``(N, 3, T, H, W)`` -> pooled features ``(N, feature_dim)``."""
        check_video(x, self.in_channels, "clip")
        x = self.stem(x)
        for name, stage in self.stages.items():
            x = self._after_stage(name, stage(x))
        return self.pool(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, 3, T, H, W)`` -> logits ``(N, num_classes)``."""
        return self.head(self.dropout(self.forward_features(x)))

    def _split(self, stage: str) -> int:
        names = list(self.stages)
        if stage not in names:
            raise ValueError(f"{self.name}: no stage {stage!r} ({', '.join(names)})")
        return names.index(stage)

    def features_before(self, x: Tensor, stage: str) -> Tensor:
        """``(N, 3, T, H, W)`` -> the features that enter ``stage`` (stem and the stages
        before it, with their inserted blocks and temporal pooling): ``(N, C', T', H', W')``."""
        check_video(x, self.in_channels, "clip")
        x = self.stem(x)
        for name in list(self.stages)[:self._split(stage)]:
            x = self._after_stage(name, self.stages[name](x))
        return x

    def forward_from(self, x: Tensor, stage: str) -> Tensor:
        """The features entering ``stage`` (as :meth:`features_before` gives them) ->
        logits ``(N, num_classes)``: ``stage`` and every stage after it, pooling, head."""
        for name in list(self.stages)[self._split(stage):]:
            x = self._after_stage(name, self.stages[name](x))
        return self.head(self.dropout(self.pool(x).flatten(1)))


# -- the two backbones -------------------------------------------------------------------

I3D_PRESETS: dict[str, dict[str, list[int]]] = {
    "none": {},
    "5blocks": {"res3": [1, 3], "res4": [1, 3, 5]},
    "10blocks": {"res3": [0, 1, 2, 3], "res4": [0, 1, 2, 3, 4, 5]},
}
I3D_PRESETS["default"] = I3D_PRESETS["5blocks"]

#: the proxy's presets at its default depths; for other depths see :func:`proxy_presets`
PROXY_PRESETS: dict[str, dict[str, list[int]]] = {
    "none": {},
    "default": {"res3": [1], "res4": [1]},
    "all": {"res3": [0, 1], "res4": [0, 1]},
}


def proxy_presets(depths: Sequence[int]) -> dict[str, dict[str, list[int]]]:
    """Presets of a proxy with these stage depths. The middle stages are res3 and res4
    (with fewer stages: the stages after res2, or res2 alone): ``default`` inserts after
    the last block of each, ``all`` after every block of each."""
    names = [f"res{i + 2}" for i in range(len(depths))]
    middle = names[1:3] or names
    depth = dict(zip(names, depths))
    return {
        "none": {},
        "default": {s: [depth[s] - 1] for s in middle},
        "all": {s: list(range(depth[s])) for s in middle},
    }


def i3d_r50(num_classes: int = 400, dropout: float = 0.5, in_channels: int = 3,
            width_div: int = 1) -> VideoResNet:
    """I3D-R50 as in SlowFast ``I3D_8x8_R50`` / pytorchvideo ``i3d_r50`` (no blocks inserted).

    Stem 5x7x7 stride (1,2,2) + 1x3x3 max-pool; stages (3, 4, 6, 3), widths 256..2048,
    inner widths 64..512; temporal kernel 3 on conv_a of res2 all, res3 0/2, res4 0/2/4,
    res5 1; temporal max-pool 2 after res2. Default insertion preset ``5blocks``.

    Args:
        num_classes: classes of the linear head (default 400).
        dropout: before the head (default 0.5).
        in_channels: input channels (3 for RGB, 2 for optical flow).
        width_div: divide the stem and every stage's widths by this (default 1 =
            I3D-R50; 2 keeps the depth and the kernels at a quarter of the MACs, for a
            CPU-sized run of the same family). Must divide 64; a reduced network is
            named ``i3d_r50/{width_div}`` and cannot load 2-D or 3-D ResNet-50 weights.

    Raises:
        ValueError: ``width_div`` not a divisor of 64.
    """
    if isinstance(width_div, bool) or not isinstance(width_div, int) or width_div < 1 \
            or 64 % width_div:
        raise ValueError(f"i3d_r50: width_div must be a divisor of 64 (1, 2, 4, ...), "
                         f"got {width_div!r}")
    d = width_div
    stages = [
        StageConfig("res2", 256 // d, 64 // d, (3, 3, 3), 1),
        StageConfig("res3", 512 // d, 128 // d, (3, 1, 3, 1), 2),
        StageConfig("res4", 1024 // d, 256 // d, (3, 1, 3, 1, 3, 1), 2),
        StageConfig("res5", 2048 // d, 512 // d, (1, 3, 1), 2),
    ]
    return VideoResNet(num_classes, stages, stem_width=64 // d, stem_kernel=(5, 7, 7),
                       stem_pool=True, temporal_pool_after="res2", dropout=dropout,
                       presets=I3D_PRESETS, default_positions="5blocks",
                       name="i3d_r50" if d == 1 else f"i3d_r50/{d}", in_channels=in_channels)


def _proxy_temporal_kernels(depths: Sequence[int]) -> list[tuple[int, ...]]:
    """First stage all 3; second stage 3 on every other block from the first; later 1."""
    out = []
    for s, d in enumerate(depths):
        if s == 0:
            out.append((3,) * d)
        elif s == 1:
            out.append(tuple(3 if i % 2 == 0 else 1 for i in range(d)))
        else:
            out.append((1,) * d)
    return out


def proxy(num_classes: int, widths: Sequence[int] = (64, 128, 256),
          depths: Sequence[int] = (1, 2, 2), stem_width: int = 32, expansion: int = 4,
          stem_kernel: Sequence[int] = (3, 5, 5), stem_pool: bool = False,
          temporal_pool: bool = True,
          temporal_kernels: Sequence[Sequence[int]] | None = None,
          dropout: float = 0.2, in_channels: int = 3) -> VideoResNet:
    """A small I3D-family backbone for search on CPU.

    Defaults: stem 3x5x5 (32 ch) stride (1,2,2), no max-pool; stages ``res2, res3, res4``
    with widths 64/128/256 (inner width / ``expansion`` = 16/32/64), depths 1/2/2, spatial
    strides 1/2/2, temporal kernel 3 on conv_a of res2 and res3 block 0, temporal max-pool
    2 after res2. A 8x64x64 clip gives 4x16x16 at res3 and 4x8x8 at res4. Default
    insertion (2 blocks): after the last block of res3 and of res4 (preset ``all``: after
    every block of res3 and res4; see :func:`proxy_presets` for other depths). A search
    step (weights + architecture, first order) on 2x3x8x64x64 takes ~0.3 s on one core
    of this machine.

    Its convolutional receptive field is 10 frames x 45 pixels (see
    :meth:`VideoResNet.receptive_field`): on 16x64x64 clips no conv feature spans the
    whole clip, so relating distant events needs the attention blocks (or the final
    global pooling, which loses their arrangement).

    Args:
        widths, depths: per stage (one to four stages, named res2, res3, ...).
        expansion: bottleneck ratio ``width / inner``.
        temporal_kernels: per stage, per block (default: see above).
    """
    widths, depths = list(widths), list(depths)
    if not 1 <= len(widths) <= 4 or len(widths) != len(depths):
        raise ValueError(f"proxy: widths and depths need the same length (1 to 4 stages), "
                         f"got widths={widths} depths={depths}")
    for w, d in zip(widths, depths):
        if not isinstance(w, int) or not isinstance(d, int) or w < expansion or d < 1:
            raise ValueError(f"proxy: widths must be integers >= expansion ({expansion}) and "
                             f"depths >= 1, got widths={widths} depths={depths}")
    if temporal_kernels is None:
        kts = _proxy_temporal_kernels(depths)
    else:
        kts = [tuple(int(k) for k in s) for s in temporal_kernels]
        if [len(k) for k in kts] != depths or any(k % 2 == 0 or k < 1 for s in kts for k in s):
            raise ValueError(f"proxy: temporal_kernels must give one odd kernel per block "
                             f"(depths {depths}), got {temporal_kernels!r}")
    if len(stem_kernel) != 3 or any(int(k) % 2 == 0 for k in stem_kernel):
        raise ValueError(f"proxy: stem_kernel must be three odd sizes, got {stem_kernel!r}")
    names = [f"res{i + 2}" for i in range(len(widths))]
    stages = [StageConfig(n, w, max(1, w // expansion), k, 1 if i == 0 else 2)
              for i, (n, w, k) in enumerate(zip(names, widths, kts))]
    return VideoResNet(num_classes, stages, stem_width=stem_width,
                       stem_kernel=tuple(int(k) for k in stem_kernel), stem_pool=stem_pool,
                       temporal_pool_after="res2" if temporal_pool else None, dropout=dropout,
                       presets=proxy_presets(depths), default_positions="default",
                       name="proxy", in_channels=in_channels)
