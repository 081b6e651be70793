"""What the two-stream space costs: every value of every variable at SlowFast's point
(:func:`twostream_costs`, ``attnas cost --space --backbone twostream``), one architecture's
network (:func:`twostream_cost`), and the budget a stage's selection keeps to
(:class:`TwoStreamBudget`, from ``--model.cost_target``: :func:`parse_twostream_target`).

MACs and params are counted on the built network (:func:`supernet.counting.count_flops`,
attention included) per clip ``(T, H, W)``. The cell search's cost model is
:mod:`supernet.costmodel`, which re-exports these names.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..counting import count_flops, count_params
from ..factory import create_backbone
from ..hparams import parse_gmacs
from .build import twostream
from .space import SLOWFAST_DEFAULT, VARIABLE_NAMES, VARIABLES, TwoStreamArch

__all__ = ["twostream_costs", "describe_twostream", "twostream_cost", "parse_twostream_target",
           "TwoStreamBudget"]


@functools.lru_cache(maxsize=8)
def twostream_costs(clip: tuple[int, int, int] = (32, 24, 24), width_div: int = 8,
                    depths: tuple[int, ...] = (1, 1, 1, 1), num_classes: int = 400,
                    stem_pool: bool = True) -> tuple[dict[str, Any], ...]:
    """The cost of every value of every variable of the two-stream space
    (:mod:`supernet.twostream.space`): MACs and params per clip ``(T, H, W)`` of SlowFast's
    point with that one variable changed (``attention_at`` with a non-local block, the
    pathway being meaningless without one; ``cell`` is skipped: a genotype's cost is its
    own). Rows ``{"variable", "value", "macs", "params", "default"}``; cached."""
    rows = []
    for var in VARIABLES:
        for value in var.values:
            if value == "cell":
                continue
            values = {var.name: value}
            if var.name == "attention_at":
                values["attention"] = "nonlocal"
            net = create_backbone("twostream", num_classes, arch=TwoStreamArch.create(values),
                                  width_div=width_div, depths=tuple(depths),
                                  stem_pool=stem_pool).eval()
            rows.append({"variable": var.name, "value": value,
                         "macs": int(count_flops(net, (1, 3, *clip))["macs"]),
                         "params": count_params(net),
                         "default": SLOWFAST_DEFAULT[var.name] == value})
    return tuple(rows)


def describe_twostream(clip: tuple[int, int, int] = (32, 24, 24), width_div: int = 8,
                       depths: tuple[int, ...] = (1, 1, 1, 1), num_classes: int = 400,
                       stem_pool: bool = True) -> list[str]:
    """:func:`twostream_costs` as text lines (``*`` marks SlowFast's values)."""
    rows = twostream_costs(tuple(clip), width_div, tuple(depths), num_classes, stem_pool)
    lines = [f"cost of the two-stream space: SlowFast family, width / {width_div}, depths "
             f"{'-'.join(map(str, depths))}, {'' if stem_pool else 'no '}stem pool, clip "
             f"{'x'.join(map(str, clip))}; each row changes "
             f"one variable of SlowFast's point (* = its value)",
             f"{'variable':14s} {'value':10s} {'MMACs':>10s} {'params':>12s}"]
    for r in rows:
        lines.append(f"{r['variable']:14s} {str(r['value']) + ('*' if r['default'] else ''):10s}"
                     f" {r['macs'] / 1e6:10.3f} {r['params']:12,d}")
    return lines


def twostream_cost(arch: Any, num_classes: int, clip: tuple[int, int, int],
                   in_channels: int = 3) -> dict[str, Any]:
    """``{"clip", "params", "macs"}`` per clip ``(T, H, W)`` of the network a two-stream
    architecture (a :class:`~supernet.twostream.TwoStreamArch`) describes, at its
    ``network`` size, attention counted."""
    with torch.no_grad():
        net = twostream(num_classes, arch, in_channels=in_channels).eval()
        macs = count_flops(net, (1, in_channels, *clip))["macs"]
    return {"clip": list(clip), "params": count_params(net), "macs": int(macs)}


def parse_twostream_target(target: str | float) -> tuple[str, float]:
    """A budget of a two-stream search: ``("gmacs", v)`` (MACs per clip of the whole
    network, in G) or ``("ratio", r)`` (times SlowFast's point of the space at the same
    network size and clip; ``slowfast`` = ``1x``); ``ValueError`` naming the accepted
    forms for anything else (zero, negative, another word)."""
    forms = ("a positive number of GMACs per clip of the network (e.g. 0.02), a ratio of "
             "SlowFast's point ('1x', '0.8x') or 'slowfast'")
    value = parse_gmacs(target, forms)
    if value is not None:
        return "gmacs", value
    text = str(target).strip().lower()
    if text == "slowfast":
        return "ratio", 1.0
    ratio_text, sep, rest = text.partition("x")
    if sep and rest in ("", "slowfast"):
        try:
            ratio = float(ratio_text)
        except ValueError:
            ratio = float("nan")
        if math.isfinite(ratio) and ratio > 0:
            return "ratio", ratio
    raise ValueError(f"cost target {target!r}: expected {forms}")


class TwoStreamBudget:
    """A budget on the MACs per clip of a two-stream network, for a stage's selection.

    A value of a searched variable is *admissible* when some completion keeps the network
    within the target: the stage's variables not decided yet take every combination of
    their values, the later stages' variables the values the stage's supernet holds
    (SlowFast's fusion, the base attention) -- so a stage leaves room for what the next
    stages start from, and those stages can only trade within what is left. Costs are
    counted on the built network (:func:`supernet.counting.count_flops`), cached per point.

    Args:
        target: as :func:`parse_twostream_target`.
        network: ``{"width_div", "depths", "stem_pool"}`` of the searched network.
        clip: ``(T, H, W)`` of the clips it reads.
        num_classes: head size.
        in_channels: input channels.
        cell: the genotype dict of attention value ``cell`` (None: no cell).
    """

    def __init__(self, target: str | float, network: Mapping[str, Any],
                 clip: tuple[int, int, int], num_classes: int, in_channels: int = 3,
                 cell: Mapping[str, Any] | None = None) -> None:
        kind, value = parse_twostream_target(target)
        self.spec = target
        self.network = {"width_div": int(network.get("width_div", 8)),
                        "depths": [int(d) for d in network.get("depths", (1, 1, 1, 1))],
                        "stem_pool": bool(network.get("stem_pool", True))}
        self.clip = tuple(int(c) for c in clip)
        self.num_classes, self.in_channels, self.cell = num_classes, in_channels, cell
        self._cache: dict[tuple, int] = {}
        self.anchor = self.macs(SLOWFAST_DEFAULT)
        self.target = int(round(value * 1e9)) if kind == "gmacs" else int(value * self.anchor)

    def macs(self, values: Mapping[str, Any]) -> int:
        """MACs per clip of the network at the point ``values`` (all eight variables)."""
        key = tuple(values[n] for n in VARIABLE_NAMES)
        if key not in self._cache:
            cell = self.cell if values["attention"] == "cell" else None
            arch = TwoStreamArch.create(dict(values), cell=cell, network=self.network)
            self._cache[key] = twostream_cost(arch, self.num_classes, self.clip,
                                              self.in_channels)["macs"]
        return self._cache[key]

    def cheapest(self, values: Mapping[str, Any], free: Mapping[str, Sequence[Any]]
                 ) -> tuple[int, dict[str, Any]]:
        """The cheapest completion of ``values``: ``(macs, point)`` over every combination
        of ``free`` (variable -> the values it may still take)."""
        names = list(free)
        best: tuple[int, dict[str, Any]] | None = None
        for combo in itertools.product(*(free[n] for n in names)):
            point = {**values, **dict(zip(names, combo))}
            m = self.macs(point)
            if best is None or m < best[0]:
                best = (m, point)
        assert best is not None
        return best

    def admissible(self, name: str, candidates: Sequence[Any], values: Mapping[str, Any],
                   undecided: Mapping[str, Sequence[Any]]) -> list[Any]:
        """The ``candidates`` of variable ``name`` with which some completion of
        ``values`` over ``undecided`` stays within the target."""
        rest = {k: v for k, v in undecided.items() if k != name}
        return [c for c in candidates
                if self.cheapest({**values, name: c}, rest)[0] <= self.target]

    def expected_macs(self, values: Mapping[str, Any], free: Mapping[str, Sequence[Any]],
                      weights: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Expected MACs per clip (a scalar tensor, differentiable in ``weights``) when
        each variable of ``free`` takes its values independently with probabilities
        ``weights[name]`` (``(len(free[name]),)``, e.g. a stage's softmax), the others
        ``values``: the exact sum over every combination (54 at most in this space)."""
        names = list(free)
        total = None
        for combo in itertools.product(*(range(len(free[n])) for n in names)):
            point = {**values, **{n: free[n][i] for n, i in zip(names, combo)}}
            p = None
            for n, i in zip(names, combo):
                p = weights[n][i] if p is None else p * weights[n][i]
            term = (p if p is not None else torch.tensor(1.0)) * float(self.macs(point))
            total = term if total is None else total + term
        assert total is not None
        return total

    def check(self, values: Mapping[str, Any], free: Mapping[str, Sequence[Any]]) -> None:
        """``ValueError`` (one line, with the cheapest network's cost) when no completion
        meets the target."""
        m, point = self.cheapest(values, free)
        if m > self.target:
            picked = ", ".join(f"{k} {point[k]}" for k in free)
            raise ValueError(
                f"cost target {self.spec!r} = {self.target / 1e6:.3f} MMACs per clip is below "
                f"the cheapest network this stage can reach: {m / 1e6:.3f} MMACs "
                f"({picked}; SlowFast's point {self.anchor / 1e6:.3f} MMACs)")

    def record(self) -> dict[str, Any]:
        """JSON-able facts for a stage's provenance."""
        return {"target": str(self.spec), "target_macs": self.target,
                "anchor_macs": self.anchor, "clip": list(self.clip)}
