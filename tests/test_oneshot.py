"""One-shot estimates: a cell's estimate is the loss of the supernet restricted to it, and
the rank statistics are right."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from derive.oneshot import kendall_tau, oneshot_estimate, oneshot_estimates, spearman_rho
from derive.scoring import SelectionData
from supernet.cells import NodeSpec, SearchCell, fixed_from_search, recalibrate_batchnorm
from supernet.factory import create_backbone

pytestmark = pytest.mark.usefixtures("one_thread")
PROXY = {"widths": (16, 32, 64), "depths": (1, 1, 1), "stem_width": 8}
CELL = [NodeSpec("dot.spatiotemporal.softmax", 0), NodeSpec("map.temporal.sigmoid", 1)]


def _supernet() -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_backbone("proxy", 3, block="search",
                            block_kwargs={"num_nodes": 2, "position": "sincos"}, **PROXY)
    with torch.no_grad():  # a non-trivial sink so that the cells matter
        for _, block in model.inserted_blocks():
            block.bn.weight.fill_(1.0)
    return model


def _data() -> SelectionData:
    g = torch.Generator().manual_seed(1)
    val = [(torch.randn(4, 3, 8, 16, 16, generator=g), torch.tensor([0, 1, 2, 0]))
           for _ in range(2)]
    calib = [torch.randn(4, 3, 8, 16, 16, generator=g) for _ in range(2)]
    return SelectionData(val=val, calib=calib)


def _fixed_copy(model: torch.nn.Module, nodes: list[NodeSpec]) -> torch.nn.Module:
    """The supernet with every search cell replaced by the fixed cell that inherits it."""
    net = copy.deepcopy(model)
    for stage in net.stages.values():
        for key, block in list(stage.inserted.items()):
            if isinstance(block, SearchCell):
                stage.inserted[key] = fixed_from_search(block, nodes)
    return net


def test_the_estimate_is_the_loss_of_the_restricted_supernet() -> None:
    model, data = _supernet(), _data()
    est = oneshot_estimate(copy.deepcopy(model), CELL, data)
    fixed = _fixed_copy(model, CELL)
    recalibrate_batchnorm(fixed, data.calib)
    with torch.no_grad():
        logits = torch.cat([fixed(v) for v, _ in data.val]).double()
    labels = torch.cat([y for _, y in data.val])
    assert est.loss == pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-5)
    assert est.acc == pytest.approx(float((logits.argmax(1) == labels).double().mean()))


def test_estimates_leave_the_supernet_as_it_was() -> None:
    model, data = _supernet(), _data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    masks = model.arch.restrictions()
    other = [NodeSpec("map.spatial.softmax", 0), NodeSpec("dot.temporal.relu", 0)]
    a, b = oneshot_estimates(model, [CELL, other], data)
    assert a != b
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(x, y) for x, y in zip(masks, model.arch.restrictions()))


def test_rank_correlations() -> None:
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx(-1.0)
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert spearman_rho([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(0.8)
    assert spearman_rho([1, 1, 2], [1, 2, 3]) == pytest.approx(0.8660254, rel=1e-6)
