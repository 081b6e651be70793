"""The search space, the 24 attention ops, the mixed edge and both cells."""

from __future__ import annotations

import pytest
import torch

from supernet.cells import (
    ArchParameters,
    FixedCell,
    SearchCell,
    fixed_from_search,
    recalibrate_batchnorm,
)
from supernet.ops import AttentionOp, MixedEdge, reference_mixed_edge
from supernet.space import OP_NAMES, OPS, parse_op

AWKWARD = [
    (1, 8, 1, 5, 7),  # batch 1, T=1, odd H != W
    (2, 8, 3, 1, 4),  # H = 1
    (2, 8, 4, 6, 3),  # H != W, odd W
]


def test_space_has_24_named_ops() -> None:
    assert len(OPS) == 24 and len(set(OP_NAMES)) == 24
    assert "dot.spatiotemporal.softmax" in OP_NAMES and "map.temporal.identity" in OP_NAMES
    assert parse_op("map.spatial.sigmoid").family == "map"


@pytest.mark.parametrize("shape", AWKWARD)
@pytest.mark.parametrize("op", OP_NAMES)
def test_every_op_keeps_shape(op: str, shape: tuple[int, ...]) -> None:
    x = torch.randn(shape)
    for position in ("none", "coords"):
        y = AttentionOp(shape[1], op, position=position, kv_pool=True)(x)
        assert y.shape == x.shape and torch.isfinite(y).all()


@pytest.mark.parametrize("shape", AWKWARD)
@pytest.mark.parametrize("position", ["none", "coords", "sincos"])
def test_cells_keep_shape(shape: tuple[int, ...], position: str) -> None:
    x = torch.randn(shape)
    arch = ArchParameters(num_nodes=3)
    assert SearchCell(shape[1], arch, position=position)(x).shape == x.shape
    nodes = [("dot.spatiotemporal.softmax", 0), ("map.temporal.sigmoid", 1),
             ("dot.spatial.relu", 1)]
    assert FixedCell(shape[1], nodes, position=position)(x).shape == x.shape


@pytest.mark.parametrize("position", ["none", "coords", "sincos"])
@pytest.mark.parametrize("kv_pool", [True, False])
def test_fast_mixed_edge_equals_explicit_sum(position: str, kv_pool: bool) -> None:
    torch.manual_seed(0)
    edge = MixedEdge(6, position=position, kv_pool=kv_pool).double()
    z = torch.randn(2, 6, 3, 5, 7, dtype=torch.float64)
    w = torch.randn(24, dtype=torch.float64).softmax(0)
    fast = edge(z, w)
    ref = reference_mixed_edge(edge, z, w)
    torch.testing.assert_close(fast, ref, atol=1e-10, rtol=1e-10)
    # and the gradients agree too (the fast path has a hand-written backward)
    z1 = z.clone().requires_grad_()
    w1 = w.clone().requires_grad_()
    g = torch.randn_like(fast)
    gz_fast, gw_fast = torch.autograd.grad((edge(z1, w1) * g).sum(), (z1, w1))
    gz_ref, gw_ref = torch.autograd.grad((reference_mixed_edge(edge, z1, w1) * g).sum(), (z1, w1))
    torch.testing.assert_close(gz_fast, gz_ref, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(gw_fast, gw_ref, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("chunked", [False, True])
def test_mixed_attention_gradcheck(chunked: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    import supernet.ops as ops

    if chunked:  # force several query-row chunks
        monkeypatch.setattr(ops, "_row_chunk", lambda b, lq, lk: 2)
    q = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=True)
    w = torch.rand(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ops.mixed_attention, (q, k, v, w))


def test_sdpa_single_op_matches_explicit_softmax() -> None:
    torch.manual_seed(0)
    op = AttentionOp(8, "dot.spatiotemporal.softmax", position="coords").double()
    x = torch.randn(2, 8, 3, 6, 5, dtype=torch.float64)
    from supernet.ops import single_op

    torch.testing.assert_close(single_op(op.weights, op.spec, x, use_sdpa=True),
                               single_op(op.weights, op.spec, x, use_sdpa=False))


def _randomise_bn(cell: torch.nn.Module) -> None:
    with torch.no_grad():
        cell.bn.weight.uniform_(0.5, 1.5)
        cell.bn.bias.uniform_(-0.5, 0.5)


@pytest.mark.parametrize("nodes", [
    [("dot.spatiotemporal.softmax", 0), ("map.spatial.sigmoid", 1), ("dot.temporal.relu", 0)],
    [("map.spatiotemporal.softmax", 0), ("dot.spatial.identity", 0), ("dot.temporal.sigmoid", 2)],
])
def test_one_hot_search_cell_equals_fixed_cell(nodes: list) -> None:
    torch.manual_seed(1)
    arch = ArchParameters(num_nodes=3).double()
    cell = SearchCell(8, arch, position="coords").double()
    _randomise_bn(cell)
    arch.set_one_hot(nodes)
    fixed = fixed_from_search(cell, nodes).double()
    x = torch.randn(2, 8, 4, 6, 5, dtype=torch.float64)
    for train in (True, False):
        cell.train(train)
        fixed.train(train)
        torch.testing.assert_close(cell(x), fixed(x), atol=1e-9, rtol=1e-9)
    assert [tuple(n) for n in fixed.nodes] == [tuple(n) for n in nodes]
    assert arch.derive() == fixed.nodes


def test_new_cell_is_identity_and_gradients_reach_everything() -> None:
    torch.manual_seed(0)
    arch = ArchParameters(num_nodes=3)
    cell = SearchCell(8, arch, position="coords")
    x = torch.randn(2, 8, 4, 6, 6)
    torch.testing.assert_close(cell(x), x)  # gamma = 0: identity
    # gamma = 0 blocks the gradient into the cell on the very first step (by design: a new
    # cell cannot disturb a pretrained network); one weight step un-zeroes gamma, after which
    # one backward must reach alpha, beta and every weight.
    opt = torch.optim.SGD(list(cell.parameters()) + list(arch.parameters()), lr=0.1)
    target = torch.randn_like(x)
    for _ in range(2):
        opt.zero_grad()
        ((cell(x) - target) ** 2).mean().backward()
        opt.step()
    opt.zero_grad()
    ((cell(x) - target) ** 2).mean().backward()
    named = list(cell.named_parameters()) + [("arch.alpha", arch.alpha), ("arch.beta", arch.beta)]
    for name, p in named:
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    # the arch parameters are not the cell's own parameters (owned by the network)
    assert all(p is not arch.alpha and p is not arch.beta for p in cell.parameters())


def test_bad_input_messages() -> None:
    with pytest.raises(ValueError, match="unknown operation 'dot.spatial.tanh'.*activation in"):
        AttentionOp(8, "dot.spatial.tanh")
    with pytest.raises(ValueError, match="integer channel count >= 2"):
        FixedCell(1, [("dot.spatial.softmax", 0)])
    with pytest.raises(ValueError, match="5-D video tensor"):
        FixedCell(8, [("dot.spatial.softmax", 0)])(torch.randn(2, 8, 6, 6))
    with pytest.raises(ValueError, match="has 4 channels but this block was built for 8"):
        SearchCell(8, ArchParameters())(torch.randn(1, 4, 2, 3, 3))
    with pytest.raises(ValueError, match=r"nodes\[1\]\.input = 2 is out of range"):
        FixedCell(8, [("dot.spatial.softmax", 0), ("map.spatial.relu", 2)])
    with pytest.raises(ValueError, match="unknown position 'xyz'; accepted: none, coords, sincos"):
        FixedCell(8, [("dot.spatial.softmax", 0)], position="xyz")


def test_recalibration_is_the_exact_average_and_restores_the_module() -> None:
    """Running statistics become the plain mean of the per-batch mean/var; momentum and the
    other buffers come back; the model ends in eval mode; an empty list changes nothing."""
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm3d(4, momentum=0.3)
    model = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 1), bn).train()
    batches = [torch.randn(2, 3, 2, 3, 3) * (i + 1) for i in range(3)]
    with torch.no_grad():
        feats = [model[0](b) for b in batches]
    mean = torch.stack([f.mean((0, 2, 3, 4)) for f in feats]).mean(0)
    var = torch.stack([f.transpose(0, 1).flatten(1).var(1) for f in feats]).mean(0)
    recalibrate_batchnorm(model, batches)
    assert torch.allclose(bn.running_mean, mean, atol=1e-5)
    assert torch.allclose(bn.running_var, var, rtol=1e-4)
    assert bn.momentum == 0.3 and not model.training and int(bn.num_batches_tracked) == 3
    before = bn.running_mean.clone()
    model.train()
    recalibrate_batchnorm(model, [])
    assert torch.equal(bn.running_mean, before) and not model.training
