"""The cost model of the search space: what every choice of a cell costs where it is inserted.

A cell's cost is additive (MACs counted with ``FlopCounterMode``, attention included; see
:mod:`supernet.counting`)::

    cost(cell) = fixed(Ci, K) + sum_k op(node_k, Ci)

* ``fixed``: the 1x1x1 projection C -> Ci, the sink Ci*K -> C and the BatchNorms (params);
* ``op``: one candidate operation at width Ci (it does not depend on the node's input).

Both depend on the insertion shape ``(C, T, H, W)`` and the inner width ``Ci``, so a
:class:`CellCosts` table is counted once per shape and width (cached) and summed over the
insertion positions of a backbone: :class:`SpaceCost` is the network-level table that the
rest of the project reads -- the expected-cost term of the architecture objective
(:meth:`SpaceCost.expected_macs`), the budget of the selection rules
(:class:`CellBudget`), the cost a genotype records, and ``attnas cost --space``.

Cost targets (``--model.cost_target``) are MACs of the inserted blocks per clip:
``0.05`` (GMACs), ``1x`` / ``0.5x`` (times the non-local blocks at the same positions),
``nonlocal`` / ``a2`` / ... (that block's MACs) or ``0.5xa2``.

The two-stream space's costs and budget live in :mod:`supernet.twostream.budget`; their
names are importable from here too.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from .cells import FixedCell, inner_width
from .counting import count_flops, count_params
from .factory import create_backbone, create_block
from .hparams import parse_gmacs
from .ops import AttentionOp
from .space import NUM_OPS, OP_NAMES
from .twostream.budget import (
    TwoStreamBudget,
    describe_twostream,
    parse_twostream_target,
    twostream_cost,
    twostream_costs,
)

__all__ = ["CellCosts", "SpaceCost", "CellBudget", "insertion_shapes", "cell_costs",
           "twostream_costs", "describe_twostream", "TwoStreamBudget", "parse_twostream_target",
           "twostream_cost",
           "block_macs", "fixed_cell_macs", "parse_cost_target", "check_min_width",
           "COST_BLOCKS", "WIDTH_GRID"]

#: blocks a cost target may name (the baselines of the benchmark)
COST_BLOCKS: tuple[str, ...] = ("nonlocal", "nonlocal_dot", "a2", "cinst", "stinc")
#: inner ratios a budget may fit a cell to (multiples of 1/64 up to 1): fine enough that the
#: fitted cell lands within a few per cent of its target
WIDTH_GRID: tuple[float, ...] = tuple(i / 64 for i in range(2, 65))

Shape = tuple[int, int, int, int]  # (C, T, H, W) of one insertion position


class CellCosts(NamedTuple):
    """MACs and parameters of a cell's parts at one inner width (summed over positions).

    ``fixed_*``: projection + sink + BatchNorms for ``num_nodes`` nodes; ``op_*``: one entry
    per candidate, in :data:`supernet.space.OPS` order.
    """

    inner_ratio: float
    num_nodes: int
    fixed_macs: int
    fixed_params: int
    op_macs: tuple[int, ...]
    op_params: tuple[int, ...]

    def macs(self, ops: Sequence[str | int]) -> int:
        """MACs of a cell whose nodes run ``ops`` (names or indices)."""
        return self.fixed_macs + sum(self.op_macs[_index(o)] for o in ops)

    def params(self, ops: Sequence[str | int]) -> int:
        """Parameters of a cell whose nodes run ``ops``."""
        return self.fixed_params + sum(self.op_params[_index(o)] for o in ops)

    def __add__(self, other: CellCosts) -> CellCosts:  # type: ignore[override]
        return CellCosts(self.inner_ratio, self.num_nodes,
                         self.fixed_macs + other.fixed_macs,
                         self.fixed_params + other.fixed_params,
                         tuple(a + b for a, b in zip(self.op_macs, other.op_macs)),
                         tuple(a + b for a, b in zip(self.op_params, other.op_params)))


def _index(op: str | int) -> int:
    return op if isinstance(op, int) else OP_NAMES.index(op)


def _count(build: Callable[[], nn.Module], shape: Sequence[int]) -> tuple[int, int]:
    """``(MACs, params)`` of one forward of ``build()`` on an input of ``shape``: built and
    counted on the ``meta`` device (shapes only), on the CPU if the module cannot run there."""
    try:
        with torch.device("meta"):
            module = build()
        return count_flops(module, shape)["macs"], count_params(module)
    except (NotImplementedError, RuntimeError):
        torch.manual_seed(0)
        module = build()
        return count_flops(module, shape)["macs"], count_params(module)


@functools.lru_cache(maxsize=4096)
def _shape_costs(shape: Shape, inner: int, num_nodes: int, kv_pool: bool, position: str
                 ) -> tuple[int, int, tuple[int, ...], tuple[int, ...]]:
    c, t, h, w = shape
    # the fixed part: projection C -> Ci and sink Ci*K -> C (the cell's own layers), plus the
    # BatchNorms' parameters (a BatchNorm's arithmetic is not counted, as everywhere)
    pm, pp = _count(lambda: nn.Conv3d(c, inner, 1, bias=False), (1, c, t, h, w))
    sm, sp = _count(lambda: nn.Conv3d(inner * num_nodes, c, 1, bias=False),
                    (1, inner * num_nodes, t, h, w))
    fixed_params = pp + sp + num_nodes * 2 * inner + 2 * c
    op_macs, op_params = [], []
    for name in OP_NAMES:
        m, p = _count(lambda name=name: AttentionOp(inner, name, position, kv_pool),
                      (1, inner, t, h, w))
        op_macs.append(m)
        op_params.append(p)
    return pm + sm, fixed_params, tuple(op_macs), tuple(op_params)


def cell_costs(shapes: Sequence[Shape], inner_ratio: float = 0.5, num_nodes: int = 3,
               kv_pool: bool = True, position: str = "none") -> CellCosts:
    """The cost table of a cell inserted at every shape of ``shapes`` (summed), per clip.

    Args:
        shapes: ``(C, T, H, W)`` of the input of each insertion position (batch 1).
        inner_ratio: Ci / C (Ci = ``round(C * inner_ratio)`` per position, as the cells do).
        num_nodes: K.
        kv_pool, position: the cell's settings (they change dot-product costs).
    """
    total: CellCosts | None = None
    for shape in shapes:
        c = int(shape[0])
        fm, fp, om, op = _shape_costs(tuple(int(s) for s in shape), inner_width(c, inner_ratio),
                                      int(num_nodes), bool(kv_pool), str(position))
        part = CellCosts(float(inner_ratio), int(num_nodes), fm, fp, om, op)
        total = part if total is None else total + part
    if total is None:
        return CellCosts(float(inner_ratio), int(num_nodes), 0, 0, (0,) * NUM_OPS,
                         (0,) * NUM_OPS)
    return total


def insertion_shapes(backbone: str = "proxy", positions: Any = None,
                     clip: Sequence[int] = (32, 24, 24),
                     backbone_kwargs: Mapping[str, Any] | None = None) -> list[Shape]:
    """``(C, T, H, W)`` at the input of every insertion position of ``backbone`` for one
    clip ``(T, H, W)`` (a shapes-only forward on the ``meta`` device)."""
    t, h, w = (int(v) for v in clip)
    with torch.device("meta"):
        model = create_backbone(backbone, 2, block="none", positions=positions,
                                **dict(backbone_kwargs or {}))
    shapes: list[Shape] = []
    hooks = [blk.register_forward_pre_hook(
        lambda _m, args: shapes.append(tuple(int(s) for s in args[0].shape[1:])))
        for _, blk in model.inserted_blocks()]
    try:
        with torch.no_grad():
            model(torch.zeros(1, int((backbone_kwargs or {}).get("in_channels", 3)), t, h, w,
                              device="meta"))
    finally:
        for hk in hooks:
            hk.remove()
    return shapes


def block_macs(block: str, shapes: Sequence[Shape], **block_kwargs: Any) -> dict[str, int]:
    """``{"macs", "params"}`` of ``block`` (a name or genotype path) at every shape, summed."""
    macs = params = 0
    for c, t, h, w in shapes:
        m, p = _count(lambda c=c: create_block(block, int(c), **block_kwargs), (1, c, t, h, w))
        macs += m
        params += p
    return {"macs": macs, "params": params}


class SpaceCost:
    """The cost model of the space for one backbone, positions and clip.

    Args:
        backbone, positions, backbone_kwargs: as :func:`supernet.create_backbone`.
        clip: ``(T, H, W)`` of the input clip (the search's clips).
        num_nodes, inner_ratio, kv_pool, position: the cell's settings.
    """

    def __init__(self, backbone: str = "proxy", positions: Any = None,
                 clip: Sequence[int] = (32, 24, 24), num_nodes: int = 3,
                 inner_ratio: float = 0.5, kv_pool: bool = True, position: str = "none",
                 backbone_kwargs: Mapping[str, Any] | None = None) -> None:
        self.backbone = backbone
        self.clip = tuple(int(v) for v in clip)
        self.shapes = insertion_shapes(backbone, positions, self.clip, backbone_kwargs)
        self.num_nodes = int(num_nodes)
        self.inner_ratio = float(inner_ratio)
        self.kv_pool = bool(kv_pool)
        self.position = str(position)
        self.table = self.at(self.inner_ratio)
        self._op_tensors: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}

    def at(self, inner_ratio: float, num_nodes: int | None = None) -> CellCosts:
        """The table at another inner ratio (and node count, default the search's K; cached
        per shape, width and K)."""
        return cell_costs(self.shapes, inner_ratio, self.num_nodes if num_nodes is None
                          else int(num_nodes), self.kv_pool, self.position)

    def block(self, name: str, **kwargs: Any) -> dict[str, int]:
        """MACs / params of a baseline block (or genotype) at the same positions."""
        return block_macs(name, self.shapes, **kwargs)

    def expected_macs(self, op_weights: torch.Tensor) -> torch.Tensor:
        """Expected MACs of the cells under per-node op weights ``(K, 24)`` (differentiable
        in the weights): ``fixed + sum_k sum_o w[k, o] * op_macs[o]``."""
        key = (op_weights.dtype, op_weights.device)
        table = self._op_tensors.get(key)
        if table is None:  # built once per dtype / device: this runs every arch step
            table = self._op_tensors[key] = torch.tensor(
                self.table.op_macs, dtype=op_weights.dtype, device=op_weights.device)
        return self.table.fixed_macs + (op_weights * table).sum()

    def cheapest(self, inner_ratio: float | None = None) -> int:
        """MACs of the cheapest cell with K nodes at ``inner_ratio`` (default: the search's)."""
        table = self.table if inner_ratio is None else self.at(inner_ratio)
        return table.fixed_macs + self.num_nodes * min(table.op_macs)

    def resolve_target(self, target: str | float) -> int:
        """A cost target in MACs; ``ValueError`` for a bad one (see :func:`parse_cost_target`)."""
        kind, value = parse_cost_target(target)
        if kind == "gmacs":
            return int(round(value * 1e9))
        ratio, block = value
        return int(round(ratio * self.block(block)["macs"]))

    def check_target(self, target: str | float, widths: Sequence[float] = WIDTH_GRID) -> int:
        """:meth:`resolve_target`, refused when below the cheapest cell at the narrowest width."""
        macs = self.resolve_target(target)
        low = min(widths)
        cheapest = self.cheapest(low)
        if macs < cheapest:
            raise ValueError(
                f"cost target {target!r} = {macs / 1e6:.3f} MMACs per clip is below the "
                f"cheapest cell of this space ({self.num_nodes} nodes at inner ratio "
                f"{low:g}: {cheapest / 1e6:.3f} MMACs in {self.backbone} at clip "
                f"{'x'.join(map(str, self.clip))})")
        return macs

    def describe(self, latency: Any = None) -> list[str]:
        """The cost table as text lines (per candidate, fixed part, baselines); with a
        :class:`supernet.latency.LatencyTable`, a measured latency column too."""
        t = self.table
        where = ", ".join("x".join(map(str, s)) for s in self.shapes)
        ms = (lambda v: f" {v:12.3f}") if latency is not None else (lambda v: "")
        lines = [f"cost of the space in {self.backbone}, clip {'x'.join(map(str, self.clip))}, "
                 f"{len(self.shapes)} position(s) [C x T x H x W: {where}], inner ratio "
                 f"{self.inner_ratio:g}, {self.num_nodes} nodes, position {self.position}",
                 f"{'part':32s} {'MMACs':>10s} {'params':>10s}"
                 + (f" {'latency (ms)':>12s}" if latency is not None else ""),
                 f"{'fixed (proj + sink + BN)':32s} {t.fixed_macs / 1e6:10.3f} "
                 f"{t.fixed_params:10,d}" + (ms(latency.fixed_ms) if latency else "")]
        for i, (name, m, p) in enumerate(zip(OP_NAMES, t.op_macs, t.op_params)):
            lines.append(f"{'  ' + name:32s} {m / 1e6:10.3f} {p:10,d}"
                         + (ms(latency.op_ms[i]) if latency else ""))
        k, lat = self.num_nodes, latency
        lines.append(f"{'cheapest cell':32s} {self.cheapest() / 1e6:10.3f}" + (
            f" {'':10s}" + ms(lat.fixed_ms + k * min(lat.op_ms)) if lat else ""))
        lines.append(f"{'dearest cell':32s} "
                     f"{(t.fixed_macs + k * max(t.op_macs)) / 1e6:10.3f}" + (
                         f" {'':10s}" + ms(lat.fixed_ms + k * max(lat.op_ms)) if lat else ""))
        for name in COST_BLOCKS:
            b = self.block(name)
            lines.append(f"{'block ' + name:32s} {b['macs'] / 1e6:10.3f} {b['params']:10,d}"
                         + (ms(lat.block_ms[name]) if lat and name in lat.block_ms else ""))
        return lines


def parse_cost_target(target: str | float) -> tuple[str, Any]:
    """``("gmacs", float)`` or ``("block", (ratio, block name))``; ``ValueError`` naming the
    accepted forms for anything else (zero, negative, unknown block)."""
    forms = ("a positive number of GMACs per clip (e.g. 0.05), a ratio of the non-local "
             "blocks' MACs ('0.5x', '1x'), a block name (" + ", ".join(COST_BLOCKS)
             + ") or a ratio of one ('2xa2')")
    value = parse_gmacs(target, forms)
    if value is not None:
        return "gmacs", value
    text = str(target).strip().lower()
    ratio_text, sep, block = text.partition("x")
    if not sep:
        ratio_text, block = "1", text
    block = block or "nonlocal"
    try:
        ratio = float(ratio_text)
    except ValueError:
        raise ValueError(f"cost target {target!r}: expected {forms}") from None
    if not math.isfinite(ratio) or ratio <= 0:
        raise ValueError(f"cost target {target!r}: the ratio must be > 0; expected {forms}")
    if block not in COST_BLOCKS:
        raise ValueError(f"cost target {target!r}: unknown block {block!r}; expected {forms}")
    return "block", (ratio, block)


class CellBudget:
    """A budget on a derived cell's MACs, for the selection rules.

    A candidate is *admissible* at node k when the cell can still meet the target with it:
    ``fixed + sum(chosen ops) + op + (K - k - 1) * cheapest op <= target`` at the
    narrowest width of ``widths``. After selection, :meth:`fit` picks the widest inner
    ratio of ``widths`` at which the chosen cell meets the target (the cell's size is set
    by the budget; the ops were scored on the supernet's width), and :meth:`fit_size` also
    chooses the number of nodes: with ``min_width`` > 0 it keeps the most leading nodes
    whose cell fits at an inner ratio >= ``min_width`` (a budget too small for K nodes of
    that width buys fewer, wider nodes instead of K narrow ones).

    Args:
        space: the :class:`SpaceCost` of the search.
        target_macs: the budget, MACs per clip of all inserted cells.
        spec: how the user wrote it (recorded).
        widths: inner ratios the fit may choose (default :data:`WIDTH_GRID`).
        min_width: the narrowest inner ratio worth a node (default 0: always K nodes).
    """

    def __init__(self, space: SpaceCost, target_macs: int, spec: str | float = "",
                 widths: Sequence[float] = WIDTH_GRID, min_width: float = 0.0) -> None:
        check_min_width(min_width)
        self.space = space
        self.target = int(target_macs)
        self.spec = spec
        self.widths = tuple(sorted(float(w) for w in widths))
        self.min_width = float(min_width)
        self.low = space.at(self.widths[0])

    def admissible(self, chosen: Sequence[int], candidates: Sequence[int]) -> list[int]:
        """The candidates (op indices) for the next node that keep the cell within budget."""
        rest = self.space.num_nodes - len(chosen) - 1
        base = self.low.macs(list(chosen)) + rest * min(self.low.op_macs)
        return [c for c in candidates if base + self.low.op_macs[c] <= self.target]

    def fit(self, ops: Sequence[str | int]) -> tuple[float, int, int]:
        """``(inner_ratio, macs, params)``: the widest ratio whose cell (``len(ops)`` nodes)
        is within budget (bisection; cost grows with the width)."""
        k = len(ops)
        lo, hi = 0, len(self.widths) - 1
        if self.space.at(self.widths[lo], k).macs(ops) > self.target:
            raise ValueError("the chosen cell does not fit the budget at any width")
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.space.at(self.widths[mid], k).macs(ops) <= self.target:
                lo = mid
            else:
                hi = mid - 1
        table = self.space.at(self.widths[lo], k)
        return self.widths[lo], table.macs(ops), table.params(ops)

    def fit_size(self, ops: Sequence[str | int]) -> tuple[int, float, int, int]:
        """``(nodes kept, inner_ratio, macs, params)``: the cell's size under the budget.
        The most leading nodes of ``ops`` (a prefix is a valid cell: a node only reads
        earlier ones) whose cell fits at an inner ratio >= ``min_width``, at the widest
        ratio that fits; one node at its widest when not even one reaches ``min_width``.
        A prefix that does not fit at any width is skipped like a too-narrow one;
        ``ValueError`` when not even the first node fits."""
        for k in range(len(ops), 1, -1):
            try:
                ratio, macs, params = self.fit(ops[:k])
            except ValueError:
                continue
            if ratio >= self.min_width:
                return k, ratio, macs, params
        return (1, *self.fit(ops[:1]))

    def record(self) -> dict[str, Any]:
        """JSON-able facts for a genotype's provenance."""
        out: dict[str, Any] = {"target": str(self.spec), "target_macs": self.target,
                               "widths": [self.widths[0], self.widths[-1]]}
        if self.min_width > 0:
            out["min_width"] = self.min_width
        return out


def check_min_width(value: Any) -> float:
    """A budget's narrowest inner ratio worth a node: a number in [0, 1]; ``ValueError``
    otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"cost_min_width must be a number in [0, 1] (an inner ratio; 0 = "
                         f"always the search's number of nodes), got {value!r}")
    return float(value)


def fixed_cell_macs(shapes: Sequence[Shape], nodes: Sequence, **cell_kwargs: Any) -> int:
    """MACs of a :class:`FixedCell` counted directly at every shape (for checks)."""
    return sum(_count(lambda c=c: FixedCell(int(c), nodes, **cell_kwargs), (1, c, t, h, w))[0]
               for c, t, h, w in shapes)
