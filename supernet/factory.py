"""The public builders: one lookup from a block name to its constructor
(:func:`create_block`, defined in :mod:`supernet.block_factory`), one from a backbone name
to its builder. The CLI, the Lightning modules and the benchmarks build models only through
:func:`create_block` and :func:`create_backbone`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .backbones import (
    PositionsLike,
    VideoBackbone,
    VideoResNet,
    i3d_r50,
    proxy,
    s3d,
    slowfast_r50,
)
from .block_factory import BLOCK_NAMES, accepted_kwargs, create_block
from .cells import ArchParameters
from .genotype import load_genotype
from .hparams import RENAMED_BACKBONE_KWARGS
from .inflate import load_pretrained_2d
from .pretrained import load_pretrained
from .twostream.build import twostream

__all__ = ["create_block", "create_backbone", "BLOCK_NAMES", "BACKBONE_NAMES"]


def _twostream(num_classes: int, arch: Any = None, width_div: int | None = None,
               depths: tuple[int, ...] | None = None, in_channels: int = 3,
               dropout: float = 0.5, stem_pool: bool | None = None) -> VideoBackbone:
    return twostream(num_classes, arch, width_div, depths, in_channels, dropout, stem_pool)


#: backbone name -> (builder, its keyword arguments)
_BACKBONES: dict[str, Callable[..., VideoBackbone]] = {"i3d_r50": i3d_r50, "proxy": proxy,
                                                         "s3d": s3d,
                                                         "slowfast_r50": slowfast_r50,
                                                         "twostream": _twostream}
BACKBONE_NAMES: tuple[str, ...] = tuple(_BACKBONES)


def create_backbone(name: str, num_classes: int, block: str = "none",
                    positions: PositionsLike = None, **kwargs: Any) -> VideoBackbone:
    """Build a backbone with ``block`` inserted at ``positions``.

    Args:
        name: ``i3d_r50`` | ``proxy`` | ``s3d`` (``gated=True`` for S3D-G) |
            ``slowfast_r50`` (two pathways; stages ``res2..5`` slow, ``fast_res2..5``) |
            ``twostream`` (a point of the two-stream space: ``arch`` = an architecture
            file of ``attnas search twostream``, None = SlowFast's point; its attention
            blocks come from the file, so ``block`` stays ``none``).
        num_classes: classes of the linear head.
        block: a :func:`create_block` name (or genotype ``.json`` path).
        positions: ``None`` (the backbone's default: I3D ``5blocks`` = res3 after blocks
            1, 3 and res4 after 1, 3, 5; proxy ``default`` = res3 after 1 and res4
            after 1), a preset name (I3D: ``none``, ``5blocks``, ``10blocks``, ``default``;
            proxy: ``none``, ``default``, ``all``), a JSON object string, or a mapping
            ``stage -> block indices`` (0-indexed; the block goes after that bottleneck).
        **kwargs: ``block_kwargs`` (dict passed to every :func:`create_block` call; for
            ``search`` also ``num_nodes`` (default 3) or an existing ``arch``),
            ``pretrained_2d`` (path of a torchvision ResNet-50 state dict; I3D only),
            ``pretrained`` (a Kinetics-pretrained 3-D ResNet checkpoint of pytorchvideo,
            PySlowFast, mmaction2 or attnas; :mod:`supernet.pretrained`) with
            ``pretrained_format`` (``auto`` by default),
            ``dropout``, for I3D ``width_div`` (a narrower I3D-R50 of the same depth),
            for the proxy ``widths``, ``depths``, ``stem_width``,
            ``expansion``, ``stem_kernel``, ``stem_pool``, ``temporal_pool``,
            ``temporal_kernels``, for S3D ``gated``, for SlowFast ``frame_ratio``, ``beta_inv``,
            ``width_div``, ``depths``, for twostream ``arch``, ``width_div``, ``depths``;
            ``in_channels`` for every backbone.

    Returns:
        a :class:`VideoBackbone` (:class:`VideoResNet` or :class:`S3D`): ``(N, 3, T, H, W)``
        -> logits ``(N, num_classes)``, with
        ``arch`` (the shared :class:`ArchParameters`) when ``block == "search"``,
        ``arch_parameters()``, ``weight_parameters()`` and ``inserted_blocks()``.

    Raises:
        ValueError: unknown backbone, block, keyword or position (listing what is
            accepted), or a bad ``pretrained_2d`` file.
    """
    if name not in _BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; accepted: {', '.join(BACKBONE_NAMES)}")
    kwargs = dict(kwargs)
    block_kwargs = dict(kwargs.pop("block_kwargs", None) or {})
    pretrained_2d = kwargs.pop("pretrained_2d", None)
    pretrained = kwargs.pop("pretrained", None)
    pretrained_format = kwargs.pop("pretrained_format", "auto")
    builder = _BACKBONES[name]
    accepted = accepted_kwargs(builder)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:  # the deprecated names (still accepted) are not offered
        raise ValueError(f"backbone {name!r}: unknown keyword(s) {unknown}; accepted: "
                         f"block_kwargs, pretrained_2d, pretrained, pretrained_format, "
                         f"{', '.join(a for a in accepted if a not in RENAMED_BACKBONE_KWARGS)}")
    if not isinstance(block, str):
        raise ValueError(f"block must be a name string, got {type(block).__name__}")
    if not block.endswith(".json") and block not in BLOCK_NAMES:
        raise ValueError(f"unknown block {block!r}; accepted: {', '.join(BLOCK_NAMES)}, "
                         f"or a genotype file path ending in .json")
    if name == "twostream":
        if block != "none" or positions not in (None, "none"):
            raise ValueError(f"backbone 'twostream': its architecture file decides the "
                             f"attention blocks and their positions; leave block at 'none' "
                             f"and positions unset (got {block!r}, {positions!r})")
        return builder(num_classes, **kwargs)
    if (pretrained_2d or pretrained) and kwargs.get("width_div", 1) != 1:
        raise ValueError(f"backbone {name!r} with width_div={kwargs['width_div']}: pretrained "
                         f"weights are full width; drop width_div or the pretrained weights")
    model = builder(num_classes, **kwargs)

    if pretrained_2d:  # before insertion: the checkpoint only covers the ResNet itself
        if name != "i3d_r50":
            raise ValueError(f"pretrained_2d is supported for i3d_r50 only (a ResNet-50 "
                             f"checkpoint), not {name!r}")
        load_pretrained_2d(model, pretrained_2d)
    if pretrained and not isinstance(model, VideoResNet):
        raise ValueError(f"pretrained checkpoints are 3-D ResNets (I3D family); backbone "
                         f"{name!r} cannot load one")
    if pretrained:  # before insertion too: the inserted blocks start as identities
        report = load_pretrained(model, pretrained, pretrained_format)
        print(f"[pretrained] {report.summary()}", flush=True)

    if block == "search":
        arch = block_kwargs.pop("arch", None)
        num_nodes = block_kwargs.pop("num_nodes", 3)
        if arch is None:
            arch = ArchParameters(num_nodes)
        elif not isinstance(arch, ArchParameters):
            raise ValueError(f"block_kwargs['arch'] must be an ArchParameters, "
                             f"got {type(arch).__name__}")
        model.arch = arch  # registered once here; the cells hold it by reference
        block_kwargs["arch"] = arch
    elif block.endswith(".json"):
        # loaded once, built per position
        block_kwargs = {"genotype": load_genotype(block), **block_kwargs}
    make = "cell" if block.endswith(".json") else block

    model.insert_blocks(positions, lambda stage, index, channels: create_block(
        make, channels, **block_kwargs), name=block)
    return model
