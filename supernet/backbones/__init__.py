"""Backbones, one file per family, all built on :mod:`.base` (stages, insertion positions,
the one insertion path): :mod:`.resnet` (I3D-R50 and the small proxy), :mod:`.s3d` (S3D,
S3D-G), :mod:`.slowfast` (SlowFast-R50, two pathways)."""

from .base import BlockStage, PositionsLike, VideoBackbone, count_parameters, resolve_positions
from .resnet import (
    I3D_PRESETS,
    PROXY_PRESETS,
    Bottleneck,
    Stage,
    StageConfig,
    VideoResNet,
    i3d_r50,
    proxy,
    proxy_presets,
)
from .s3d import S3D, S3D_PRESETS, s3d
from .slowfast import FUSION_SITES, FUSIONS, SLOWFAST_PRESETS, SlowFast, slowfast_r50

__all__ = [
    "BlockStage", "PositionsLike", "VideoBackbone", "count_parameters", "resolve_positions",
    "I3D_PRESETS", "PROXY_PRESETS", "Bottleneck", "Stage", "StageConfig", "VideoResNet",
    "i3d_r50", "proxy", "proxy_presets", "S3D", "S3D_PRESETS", "s3d", "SlowFast",
    "SLOWFAST_PRESETS", "slowfast_r50", "FUSIONS", "FUSION_SITES",
]
