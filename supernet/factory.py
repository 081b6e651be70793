"""The public builders: one lookup from a block name to its constructor, one from a
backbone name to its builder. The CLI, the Lightning modules and the benchmarks build
models only through :func:`create_block` and :func:`create_backbone`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from .backbones import (
    PositionsLike,
    VideoBackbone,
    VideoResNet,
    i3d_r50,
    proxy,
    s3d,
    slowfast_r50,
)
from .blocks import CinST, DoubleAttention, NonLocalBlock, STinC
from .cells import ArchParameters, FixedCell, SearchCell

__all__ = ["create_block", "create_backbone", "BLOCK_NAMES", "BACKBONE_NAMES"]


def _identity(channels: int) -> nn.Module:
    return nn.Identity()


def _nonlocal_dot(channels: int, inner_ratio: float = 0.5, kv_pool: bool = True,
                  position: str = "none", impl: str = "auto", heads: int = 1) -> nn.Module:
    return NonLocalBlock(channels, inner_ratio=inner_ratio, mode="dot", kv_pool=kv_pool,
                         position=position, impl=impl, heads=heads)


def _nonlocal(channels: int, inner_ratio: float = 0.5, kv_pool: bool = True,
              position: str = "none", impl: str = "auto", heads: int = 1) -> nn.Module:
    return NonLocalBlock(channels, inner_ratio=inner_ratio, mode="softmax", kv_pool=kv_pool,
                         position=position, impl=impl, heads=heads)


def _search(channels: int, arch: ArchParameters | None = None, inner_ratio: float = 0.5,
            kv_pool: bool = True, position: str = "none", candidate_norm: bool = False
            ) -> nn.Module:
    if not isinstance(arch, ArchParameters):
        raise ValueError("block 'search' needs arch=<ArchParameters> (create_backbone makes "
                         "one per network and shares it between cells)")
    return SearchCell(channels, arch, inner_ratio=inner_ratio, kv_pool=kv_pool,
                      position=position, candidate_norm=candidate_norm)


def _cell(channels: int, nodes: Any = None, genotype: Any = None, **cell_kwargs: Any
          ) -> nn.Module:
    if genotype is not None:
        if nodes is not None:
            raise ValueError("block 'cell': give nodes= or genotype=, not both")
        return _build_genotype(genotype, channels, cell_kwargs, "genotype=")
    if nodes is None:
        raise ValueError("block 'cell' needs nodes=[(op, input), ...] or genotype=<Genotype>")
    unknown = set(cell_kwargs) - {"inner_ratio", "kv_pool", "position"}
    if unknown:
        raise ValueError(f"block 'cell': unknown keyword(s) {sorted(unknown)}; accepted: "
                         f"nodes, genotype, inner_ratio, kv_pool, position")
    return FixedCell(channels, nodes, **cell_kwargs)


#: block name -> constructor ``(channels, **kwargs) -> nn.Module``
_BLOCKS: dict[str, Callable[..., nn.Module]] = {
    "none": _identity,
    "nonlocal": _nonlocal,
    "nonlocal_dot": _nonlocal_dot,
    "a2": DoubleAttention,
    "cinst": CinST,
    "stinc": STinC,
    "search": _search,
    "cell": _cell,
}
BLOCK_NAMES: tuple[str, ...] = tuple(_BLOCKS)


def _build_genotype(genotype: Any, channels: int, kwargs: Mapping[str, Any], what: str
                    ) -> nn.Module:
    build = getattr(genotype, "build", None)
    if not callable(build):
        raise ValueError(f"{what} must have a .build(channels) method (a derive Genotype), "
                         f"got {type(genotype).__name__}")
    if kwargs:
        raise ValueError(f"a genotype carries its own cell settings; drop {sorted(kwargs)} "
                         f"(they would be ignored)")
    return build(channels)


def _accepted_kwargs(fn: Callable[..., nn.Module]) -> list[str]:
    params = list(inspect.signature(fn).parameters.values())[1:]
    return [p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]


def create_block(name: str, channels: int, **kwargs: Any) -> nn.Module:
    """Build one block by name; input and output are ``(N, C, T, H, W)``.

    Names: ``none`` (identity; ignores kwargs), ``nonlocal`` (embedded Gaussian),
    ``nonlocal_dot``, ``a2`` (``m``, ``n``), ``cinst``, ``stinc``, ``search`` (a
    :class:`SearchCell`; needs ``arch=``), ``cell`` (a :class:`FixedCell` from ``nodes=`` or
    a ``genotype=`` object with ``.build(channels)``), or a path ending in ``.json`` (a
    genotype file, loaded with :func:`supernet.genotype.load_genotype`).

    Raises:
        ValueError: unknown name (the message lists the accepted names) or keyword.
    """
    if not isinstance(name, str):
        raise ValueError(f"block name must be a string, got {type(name).__name__}")
    if name.endswith(".json"):
        from .genotype import load_genotype

        return _build_genotype(load_genotype(name), channels, kwargs, f"genotype {name!r}")
    if name not in _BLOCKS:
        raise ValueError(f"unknown block {name!r}; accepted: {', '.join(BLOCK_NAMES)}, "
                         f"or a genotype file path ending in .json")
    if name == "none":
        return nn.Identity()
    ctor = _BLOCKS[name]
    if name != "cell":
        accepted = _accepted_kwargs(ctor)
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise ValueError(f"block {name!r}: unknown keyword(s) {unknown}; accepted: "
                             f"{', '.join(accepted) or '(none)'}")
    return ctor(channels, **kwargs)


def _twostream(num_classes: int, arch: Any = None, width_div: int | None = None,
               depths: tuple[int, ...] | None = None, in_channels: int = 3,
               dropout: float = 0.5, stem_pool: bool | None = None) -> VideoBackbone:
    from .twostream.build import twostream  # noqa: PLC0415 - it builds blocks through here

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
            ``temporal_kernels``, for S3D ``gated``, for SlowFast ``alpha``, ``beta_inv``,
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
    accepted = _accepted_kwargs(builder)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"backbone {name!r}: unknown keyword(s) {unknown}; accepted: "
                         f"block_kwargs, pretrained_2d, pretrained, pretrained_format, "
                         f"{', '.join(accepted)}")
    if not isinstance(block, str):
        raise ValueError(f"block must be a name string, got {type(block).__name__}")
    if not block.endswith(".json") and block not in _BLOCKS:
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
        from .inflate import load_pretrained_2d

        load_pretrained_2d(model, pretrained_2d)
    if pretrained and not isinstance(model, VideoResNet):
        raise ValueError(f"pretrained checkpoints are 3-D ResNets (I3D family); backbone "
                         f"{name!r} cannot load one")
    if pretrained:  # before insertion too: the inserted blocks start as identities
        from .pretrained import load_pretrained

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
        from .genotype import load_genotype  # loaded once, built per position

        block_kwargs = {"genotype": load_genotype(block), **block_kwargs}
    make = "cell" if block.endswith(".json") else block

    model.insert_blocks(positions, lambda stage, index, channels: create_block(
        make, channels, **block_kwargs), name=block)
    return model
