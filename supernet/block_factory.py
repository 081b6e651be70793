"""Blocks by name: one lookup from a block name to its constructor (:func:`create_block`,
:data:`BLOCK_NAMES`). Below :mod:`supernet.factory` (backbones by name), so that the
backbones the factory builds -- the two-stream network among them -- build their blocks
here without importing the factory back.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from .blocks import CinST, DoubleAttention, NonLocalBlock, STinC
from .cells import ArchParameters, FixedCell, SearchCell
from .genotype import load_genotype

__all__ = ["create_block", "BLOCK_NAMES", "accepted_kwargs"]


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


def accepted_kwargs(fn: Callable[..., nn.Module]) -> list[str]:
    """The keyword arguments ``fn(first, **kwargs)`` accepts (by name)."""
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
        return _build_genotype(load_genotype(name), channels, kwargs, f"genotype {name!r}")
    if name not in _BLOCKS:
        raise ValueError(f"unknown block {name!r}; accepted: {', '.join(BLOCK_NAMES)}, "
                         f"or a genotype file path ending in .json")
    if name == "none":
        return nn.Identity()
    ctor = _BLOCKS[name]
    if name != "cell":
        accepted = accepted_kwargs(ctor)
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise ValueError(f"block {name!r}: unknown keyword(s) {unknown}; accepted: "
                             f"{', '.join(accepted) or '(none)'}")
    return ctor(channels, **kwargs)
