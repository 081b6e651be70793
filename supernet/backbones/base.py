"""What every backbone shares: insertion positions as data and the one insertion path.

A backbone is a :class:`VideoBackbone`: named *stages* (``nn.ModuleDict``), each a
:class:`BlockStage` -- a list of blocks (bottlenecks, Inception blocks, ...) and the blocks
inserted after some of them. **Insertion positions** are a mapping ``stage name -> block
indices`` (0-indexed; a block is added *after* that block). :func:`resolve_positions` turns
``None`` (the backbone's default), a preset name, a JSON string or a mapping into a checked
mapping, and :meth:`VideoBackbone.insert_blocks` is the single code path that adds any block
type (none, non-local, A2, AIA, a derived cell, the supernet cell) to any backbone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence

from torch import Tensor, nn

__all__ = ["PositionsLike", "resolve_positions", "BlockStage", "VideoBackbone",
           "count_parameters"]


PositionsLike = None | str | Mapping[str, Iterable[int]]


def resolve_positions(positions: PositionsLike, depths: Mapping[str, int],
                      presets: Mapping[str, Mapping[str, Sequence[int]]],
                      default: str) -> dict[str, tuple[int, ...]]:
    """Check insertion positions and return ``{stage: sorted unique indices}``.

    Args:
        positions: ``None`` (the preset ``default``), a preset name, a JSON object string
            (``'{"res3": [1, 3]}'``) or a mapping ``stage -> block indices``.
        depths: ``stage name -> number of blocks`` of the backbone.
        presets: named position sets of the backbone.
        default: the preset used for ``None``.

    Raises:
        ValueError: unknown preset or stage, an index that is not an integer in
            ``[0, depth)``; the message lists what is accepted.
    """
    if positions is None:
        positions = default
    if isinstance(positions, str):
        text = positions.strip()
        if text.startswith("{"):
            try:
                positions = json.loads(text)
            except json.JSONDecodeError as err:
                raise ValueError(f"positions: invalid JSON {text!r} ({err.msg})") from None
        elif text in presets:
            positions = presets[text]
        else:
            raise ValueError(
                f"unknown positions preset {text!r}; accepted: {', '.join(presets)}, "
                f"or a mapping stage -> block indices over stages "
                + ", ".join(f"{k} ({v} blocks)" for k, v in depths.items())
            )
    if not isinstance(positions, Mapping):
        raise ValueError(f"positions must be None, a preset name or a mapping stage -> "
                         f"block indices, got {type(positions).__name__}")
    out: dict[str, tuple[int, ...]] = {}
    for stage, indices in positions.items():
        if stage not in depths:
            raise ValueError(f"positions: unknown stage {stage!r}; stages: "
                             + ", ".join(f"{k} ({v} blocks)" for k, v in depths.items()))
        if isinstance(indices, int) and not isinstance(indices, bool):
            indices = [indices]
        if isinstance(indices, (str, bytes)) or not isinstance(indices, Iterable):
            raise ValueError(f"positions[{stage!r}] must be a list of block indices, "
                             f"got {indices!r}")
        depth = depths[stage]
        checked = set()
        for i in indices:
            if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < depth:
                raise ValueError(
                    f"positions[{stage!r}]: index {i!r} is out of range; {stage} has {depth} "
                    f"blocks, so indices are 0..{depth - 1}"
                )
            checked.add(i)
        if checked:
            out[stage] = tuple(sorted(checked))
    return out


class BlockStage(nn.Module):
    """A stage: ``blocks`` run in order, each followed by its inserted block, if any
    (``inserted``, keyed by the block index as a string); ``pre`` runs first (e.g. a
    pooling layer between stages). ``width`` is the channels its blocks output.

    Shapes: ``(N, C_in, T, H, W)`` -> ``(N, width, T', H', W')``.
    """

    def __init__(self, blocks: Sequence[nn.Module], width: int,
                 pre: nn.Module | None = None) -> None:
        super().__init__()
        self.width = int(width)
        self.pre = pre
        self.blocks = nn.ModuleList(blocks)
        self.inserted = nn.ModuleDict()

    def block_width(self, index: int) -> int:
        """Output channels of block ``index`` (what a block inserted after it sees): its
        ``out_channels`` attribute, else the stage's width."""
        return int(getattr(self.blocks[index], "out_channels", self.width))

    def forward(self, x: Tensor) -> Tensor:
        if self.pre is not None:
            x = self.pre(x)
        for i, block in enumerate(self.blocks):
            x = block(x)
            key = str(i)
            if key in self.inserted:
                x = self.inserted[key](x)
        return x

    def forward_until(self, x: Tensor, index: int) -> Tensor:
        """What :meth:`forward` feeds the block inserted after block ``index``."""
        if self.pre is not None:
            x = self.pre(x)
        for i, block in enumerate(self.blocks[:index + 1]):
            x = block(x)
            if i < index and str(i) in self.inserted:
                x = self.inserted[str(i)](x)
        return x

    def forward_from(self, x: Tensor, index: int) -> Tensor:
        """The rest of :meth:`forward` from the input of the block inserted after block
        ``index`` (or from block ``index``'s output when nothing is inserted there):
        ``forward_from(forward_until(x, i), i) == forward(x)``."""
        if str(index) in self.inserted:
            x = self.inserted[str(index)](x)
        for i in range(index + 1, len(self.blocks)):
            x = self.blocks[i](x)
            if str(i) in self.inserted:
                x = self.inserted[str(i)](x)
        return x


class VideoBackbone(nn.Module):
    """Base of the backbones: stages with insertion positions.

    Subclasses build ``self.stages`` (``nn.ModuleDict`` of :class:`BlockStage`) and
    ``forward``; this class owns positions, insertion and the parameter groups.

    Args:
        num_classes: size of the classifier.
        presets: named insertion-position sets; ``default_positions`` names the default.
        name: backbone name (for reprs and errors).
    """

    def __init__(self, num_classes: int,
                 presets: Mapping[str, Mapping[str, Sequence[int]]] | None = None,
                 default_positions: str = "none", name: str = "video_backbone") -> None:
        super().__init__()
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.name = name
        self.num_classes = num_classes
        self.presets = dict(presets or {"none": {}})
        self.presets.setdefault("none", {})
        self.default_positions = default_positions
        self.stages = nn.ModuleDict()
        self.positions: dict[str, tuple[int, ...]] = {}
        self.block_name = "none"

    # -- structure -----------------------------------------------------------------------
    def stage_depths(self) -> dict[str, int]:
        """``{stage name: number of blocks}``."""
        return {name: len(stage.blocks) for name, stage in self.stages.items()}

    def stage_widths(self) -> dict[str, int]:
        """``{stage name: output channels}`` (of its last block; see
        :meth:`BlockStage.block_width` for each block's)."""
        return {name: stage.width for name, stage in self.stages.items()}

    def resolve_positions(self, positions: PositionsLike) -> dict[str, tuple[int, ...]]:
        """:func:`resolve_positions` with this backbone's depths and presets."""
        return resolve_positions(positions, self.stage_depths(), self.presets,
                                 self.default_positions)

    def insert_blocks(self, positions: PositionsLike,
                      make_block: Callable[[str, int, int], nn.Module], name: str = "") -> None:
        """Insert ``make_block(stage, index, channels)`` after each chosen block.

        The one insertion code path for every block type; replaces earlier insertions.
        """
        resolved = self.resolve_positions(positions)
        for stage in self.stages.values():
            stage.inserted = nn.ModuleDict()
        for stage_name, indices in resolved.items():
            for i in indices:
                block = make_block(stage_name, i, self.stages[stage_name].block_width(i))
                if not isinstance(block, nn.Module):
                    raise TypeError(f"block builder returned {type(block).__name__}, "
                                    f"not an nn.Module")
                self.stages[stage_name].inserted[str(i)] = block
        self.positions = resolved
        self.block_name = name or self.block_name

    def inserted_blocks(self) -> list[tuple[str, nn.Module]]:
        """``[("res3.1", block), ...]`` in forward order (identity blocks included)."""
        out = []
        for stage_name, stage in self.stages.items():
            for key in sorted(stage.inserted, key=int):
                out.append((f"{stage_name}.{key}", stage.inserted[key]))
        return out

    @property
    def blocks(self) -> list[nn.Module]:
        """The inserted blocks, in forward order."""
        return [b for _, b in self.inserted_blocks()]

    # -- a forward in two halves (what selection caches) ----------------------------------
    #: True where ``forward`` is stem -> stages (each followed by :meth:`_after_stage`) ->
    #: ``pool`` -> ``dropout`` -> ``head``, so it can be split at an inserted block
    splittable = False

    def _after_stage(self, name: str, x: Tensor) -> Tensor:
        """What runs between stage ``name`` and the next (default: nothing)."""
        return x

    def split_point(self) -> tuple[str, int] | None:
        """``(stage, index)`` of the first inserted block in forward order, or None when
        nothing is inserted or the backbone cannot be split."""
        if not self.splittable:
            return None
        for name, stage in self.stages.items():
            if len(stage.inserted):
                return name, min(int(k) for k in stage.inserted)
        return None

    def forward_prefix(self, x: Tensor, point: tuple[str, int] | None = None) -> Tensor:
        """``(N, C, T, H, W)`` clip -> the input of the first inserted block: the part of
        the forward that the inserted blocks do not change. ``point`` ``(stage, block
        index)`` splits after that block instead, whether or not a block is inserted there
        (default: :meth:`split_point`)."""
        point = point or self.split_point()
        if point is None or not self.splittable:
            raise ValueError(f"{self.name}: no inserted block to split the forward at")
        x = self.stem(x)
        for name, stage in self.stages.items():
            if name == point[0]:
                return stage.forward_until(x, point[1])
            x = self._after_stage(name, stage(x))
        raise AssertionError("unreachable: the split point is one of the stages")

    def forward_suffix(self, h: Tensor, point: tuple[str, int] | None = None) -> Tensor:
        """The rest of the forward from :meth:`forward_prefix`'s output (split at the same
        ``point``) -> logits ``(N, num_classes)``;
        ``forward_suffix(forward_prefix(x, p), p) == forward(x)``."""
        point = point or self.split_point()
        if point is None or not self.splittable:
            raise ValueError(f"{self.name}: no inserted block to split the forward at")
        x, started = h, False
        for name, stage in self.stages.items():
            if name == point[0]:
                x, started = stage.forward_from(x, point[1]), True
            elif started:
                x = stage(x)
            else:
                continue
            x = self._after_stage(name, x)
        return self.head(self.dropout(self.pool(x).flatten(1)))

    def arch_parameters(self) -> list[nn.Parameter]:
        """The shared architecture parameters (alpha, beta) when searching, else ``[]``."""
        arch = getattr(self, "arch", None)
        return list(arch.parameters()) if isinstance(arch, nn.Module) else []

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter that is not an architecture parameter."""
        arch_ids = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch_ids]

    def extra_repr(self) -> str:
        pos = ", ".join(f"{k}:{list(v)}" for k, v in self.positions.items()) or "-"
        return f"name={self.name}, block={self.block_name}, positions={pos}"


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())
