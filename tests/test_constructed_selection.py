"""Issue 35: on a constructed problem that only one kind of candidate can solve, the
normalised supernet's one-shot estimates rank that kind first and the default selection
rule picks it with a significant margin.

The problem: clips ``(N, 16, 6, 2, 2)`` of independent standard-normal vectors, two
classes. In class 1 every frame ``t + 3`` holds ``s * R x_t`` at every position, with ``R``
a fixed 90-degree rotation of each channel pair and ``s = +-1`` drawn per position; in
class 0 all frames are independent. Each frame alone, and any two frames fewer than 3
apart, have the same distribution in both classes: only a comparison of a position's
frames 3 apart tells them apart.

* A temporal dot product compares each position's frames: with keys that undo ``R``
  (e.g. ``q = x``, ``k = R^T x``) a frame's affinity to its twin is ``s |x|^2`` and to
  itself 0 (``R`` is skew), and ``A v`` brings the twin back as ``s * s = +1`` times
  ``v(R x)`` -- a signal no other candidate gets.
* Spatial candidates never compare frames. Map candidates see a frame only through its
  channel mean and max: the temporal and spatiotemporal maps' 3-frame kernels never hold
  both frames of a pair, and the spatial map averages the frames' statistics, where a
  channel mean of ``x`` and of ``R x`` are independent (``u . R u = 0``), so that average
  is distributed as in class 0 (the channel max is not covered by this argument).
* A spatiotemporal dot product sees the twin only through keys max-pooled over 2x2
  positions.

Trained alone for 300 steps (measured once, not part of the test), the four
``dot.temporal`` ops reached 97-100 % validation top-1, the spatiotemporal dot products at
most 72 %, map.spatial.softmax 62 % and the other 15 ops chance (47-51 %). The problem does
*not* decide the activation (all four temporal dot products solve it), so the assertions
are on family and dimension: ``dot.temporal``, whatever its activation.
"""

from __future__ import annotations

import inspect
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from derive.oneshot import oneshot_estimates
from derive.rules import Decision
from derive.scoring import SelectionData
from derive.select import Selection, select_cell
from supernet.cells import ArchParameters, NodeSpec, SearchCell
from supernet.optim import weight_optimizer
from supernet.search import SearchModule
from supernet.space import OP_NAMES

pytestmark = pytest.mark.usefixtures("one_thread")

CHANNELS, FRAMES, SIZE = 16, 6, 2
DISTANCE = 3  # frames apart; the map kernels span 3 frames, so no pair fits in one
USEFUL = "dot.temporal."
STEPS, BATCH, LR = 200, 128, 1e-2
#: the search's defaults (the default search is what the issue's promise is about)
DEFAULTS = {k: v.default for k, v in inspect.signature(SearchModule).parameters.items()}
#: best dot.temporal estimate below the best other one, in nats of validation loss
#: (measured 0.22-0.69 over seeds 0-9 with candidate_norm; 0.02-0.47 without)
ESTIMATE_MARGIN = 0.15
#: the selection's family and dimension margins over the best op of another family /
#: dimension, in nats (measured 0.026-0.097 over seeds 0-9 with candidate_norm)
SELECTION_MARGIN = 0.02


def _rotate(x: Tensor) -> Tensor:
    """``(N, C, ...)`` -> each channel pair ``(a, b)`` turned to ``(-b, a)``: a fixed
    rotation ``R`` with ``x . R x = 0``."""
    out = torch.empty_like(x)
    out[:, 0::2] = -x[:, 1::2]
    out[:, 1::2] = x[:, 0::2]
    return out


def _clips(n: int, g: torch.Generator, relation: bool = True) -> tuple[Tensor, Tensor]:
    """``n`` clips ``(n, C, T, H, W)`` and labels ``(n,)`` (see the module docstring);
    ``relation=False`` draws the labels but leaves every frame independent."""
    x = torch.randn(n, CHANNELS, FRAMES, SIZE, SIZE, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    if relation:
        twin = y.view(n, 1, 1, 1) == 1
        for t in range(FRAMES - DISTANCE):
            sign = torch.randint(0, 2, (n, 1, SIZE, SIZE), generator=g) * 2.0 - 1.0
            x[:, :, t + DISTANCE] = torch.where(twin, _rotate(x[:, :, t]) * sign,
                                                x[:, :, t + DISTANCE])
    return x, y


class _Probe(nn.Module):
    """A one-node supernet: a :class:`SearchCell` on the clip (the search's default cell
    settings but the inner width: all 16 channels, so that the cell's projection is not a
    bottleneck of the problem), ReLU, global average pool, linear head. alpha and beta
    are frozen at exactly uniform, as the ``uniform`` strategy trains them."""

    def __init__(self, candidate_norm: bool) -> None:
        super().__init__()
        self.arch = ArchParameters(1, init_scale=0.0)
        self.arch.requires_grad_(False)
        self.cell = SearchCell(CHANNELS, self.arch, inner_ratio=1.0,
                               kv_pool=DEFAULTS["kv_pool"],
                               position=DEFAULTS["position_encoding"],
                               candidate_norm=candidate_norm)
        self.head = nn.Linear(CHANNELS, 2)
        with torch.no_grad():  # the cell contributes from the first step
            self.cell.bn.weight.fill_(1.0)

    def forward(self, x: Tensor) -> Tensor:
        """Clips ``(N, C, T, H, W)`` -> logits ``(N, 2)``."""
        return self.head(torch.relu(self.cell(x)).mean((2, 3, 4)))


class _Outcome(NamedTuple):
    """One trained supernet's one-shot estimates (op -> validation loss of the single-op
    cell) and its default selection."""

    estimates: dict[str, float]
    selection: Selection


def _search(seed: int, candidate_norm: bool = True, relation: bool = True) -> _Outcome:
    """Train the supernet ``STEPS`` AdamW steps on fresh clips, then estimate every
    single-op cell (BatchNorm recalibrated, as ``attnas table score-supernet`` does) and
    select with the search's default rule and BatchNorm mode."""
    torch.manual_seed(seed)
    model = _Probe(candidate_norm)
    g = torch.Generator().manual_seed(1000 + seed)
    opt = weight_optimizer([p for p in model.parameters() if p.requires_grad], "adamw",
                           lr=LR, momentum=0.0)
    model.train()
    for _ in range(STEPS):
        x, y = _clips(BATCH, g, relation)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    g = torch.Generator().manual_seed(7000 + seed)
    val = [_clips(64, g, relation) for _ in range(4)]
    calib = [_clips(64, g, relation)[0] for _ in range(2)]
    cells = [[NodeSpec(op, 0)] for op in OP_NAMES]
    est = oneshot_estimates(model, cells, SelectionData(val=val, calib=calib))
    selection = select_cell(model, DEFAULTS["select"],
                            SelectionData(val=val, calib=calib, bn=DEFAULTS["select_bn"]))
    return _Outcome({op: e.loss for op, e in zip(OP_NAMES, est)}, selection)


def test_the_normalised_supernet_ranks_and_selects_the_only_useful_candidates() -> None:
    """A ``candidate_norm`` supernet trained for real on the problem: its one-shot
    estimates put the temporal dot products first and the default rule picks one, by
    family and dimension margins well above noise."""
    out = _search(seed=0)
    est = out.estimates
    # (a) the one-shot estimates: the four temporal dot products are the top four, and the
    # best of them is clearly ahead of every op of another family or dimension
    ranked = sorted(est, key=est.__getitem__)
    assert all(op.startswith(USEFUL) for op in ranked[:4]), ranked[:6]
    best_useful = min(v for op, v in est.items() if op.startswith(USEFUL))
    best_other = min(v for op, v in est.items() if not op.startswith(USEFUL))
    assert best_other - best_useful > ESTIMATE_MARGIN, (best_useful, best_other)
    # (b) the default rule picks a temporal dot product, and both of the factors the
    # problem decides are significant, with a margin over the best op without them
    sel = out.selection
    assert sel.nodes[0].op.startswith(USEFUL), sel.report()
    op: Decision = sel.decisions[0]
    assert op.what == "op" and op.factors is not None
    for factor, value in (("family", "dot"), ("dimension", "temporal")):
        f = op.factors[factor]
        assert f["choice"] == value and f["significant"] is True, sel.report()
        assert f["margin"] > SELECTION_MARGIN, sel.report()
