"""The network a two-stream architecture file describes, its blocks built through
:func:`supernet.block_factory.create_block`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..backbones import VideoBackbone, slowfast_r50
from ..block_factory import create_block
from ..genotype import Genotype
from .space import TwoStreamArch, attention_positions, load_arch

__all__ = ["twostream"]


def twostream(num_classes: int, arch: str | Path | Mapping[str, Any] | TwoStreamArch | None = None,
              width_div: int | None = None, depths: tuple[int, ...] | None = None,
              in_channels: int = 3, dropout: float = 0.5, stem_pool: bool | None = None
              ) -> VideoBackbone:
    """A SlowFast-family network at a point of the two-stream space, with its attention
    blocks inserted.

    Args:
        num_classes: classes of the head.
        arch: an architecture file (path), its parsed document, a :class:`TwoStreamArch`,
            or None (SlowFast's hand-designed point: the benchmark's anchor).
        width_div: width divisor (1 = SlowFast-R50 widths; 8 = the CPU proxy).
        depths: blocks per stage res2..res5 ((1, 1, 1, 1) = the proxy; (3, 4, 6, 3) R50).
        in_channels: input channels (3 RGB, 2 flow).
        dropout: before the head.
        stem_pool: the stems' max-pool (True as SlowFast-R50; the 24x24 proxy drops it).

    ``width_div``, ``depths`` and ``stem_pool`` left at None take the file's ``network``
    (the size it was searched at), else 8, (1, 1, 1, 1) and True.

    Returns:
        a :class:`~supernet.backbones.SlowFast` ``(N, C, T, H, W) -> (N, num_classes)``
        (``T`` a multiple of the architecture's ``frame_ratio``) with ``twostream_arch`` set.

    Raises:
        ValueError: an unreadable or invalid architecture (one line).
    """
    if arch is None:
        arch = TwoStreamArch.create()
    elif not isinstance(arch, TwoStreamArch):
        arch = load_arch(arch)
    net_cfg = arch.network
    width_div = int(net_cfg.get("width_div", 8)) if width_div is None else width_div
    depths = tuple(net_cfg.get("depths", (1, 1, 1, 1))) if depths is None else tuple(depths)
    stem_pool = bool(net_cfg.get("stem_pool", True)) if stem_pool is None else stem_pool
    net = slowfast_r50(num_classes, in_channels=in_channels, dropout=dropout,
                       width_div=width_div, depths=tuple(depths), stem_pool=stem_pool,
                       **arch.backbone_kwargs())
    block = arch.values["attention"]
    if block != "none":
        cell = Genotype.from_dict(arch.cell, "the architecture's cell") if block == "cell" else None
        net.insert_blocks(
            attention_positions(arch.values["attention_at"], tuple(depths)),
            lambda stage, index, channels: (cell.build(channels) if cell is not None
                                            else create_block(block, channels)),
            name=block)
    net.twostream_arch = arch.to_dict()
    return net
