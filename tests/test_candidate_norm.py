"""A normalised mixed edge compares its candidates on one scale and keeps the fast path."""

from __future__ import annotations

import pytest
import torch

from supernet.ops import MixedEdge, reference_mixed_edge, single_op
from supernet.search import SearchModule
from supernet.space import OPS

pytestmark = pytest.mark.usefixtures("one_thread")


def _edge(normalize: bool) -> MixedEdge:
    torch.manual_seed(0)
    edge = MixedEdge(8, position="sincos", normalize=normalize).double()
    with torch.no_grad():  # large q/k weights: unnormalised affinities far from softmax's scale
        edge.weights.q.weight.mul_(6.0)
        edge.weights.k.weight.mul_(6.0)
        for conv in edge.weights.maps.values():
            conv.weight.mul_(4.0)
    return edge


def test_the_fast_path_equals_the_normalised_explicit_sum() -> None:
    edge = _edge(True)
    z = torch.randn(2, 8, 4, 6, 6, dtype=torch.float64)
    w = torch.softmax(torch.randn(24, dtype=torch.float64), 0)
    scales = edge.candidate_scales(z)
    want = sum(w[i] / scales[i] * single_op(edge.weights, op, z, use_sdpa=False)
               for i, op in enumerate(OPS))
    assert torch.allclose(edge(z, w), want, atol=1e-10)
    edge.explicit = True
    assert torch.allclose(edge(z, w), want, atol=1e-10)
    plain = _edge(False)
    assert torch.allclose(plain(z, w), reference_mixed_edge(plain, z, w), atol=1e-10)


def test_every_candidate_reaches_the_mixture_on_one_scale() -> None:
    edge = _edge(True)
    z = torch.randn(2, 8, 4, 6, 6, dtype=torch.float64)
    scales = edge.candidate_scales(z)
    rms = torch.stack([single_op(edge.weights, op, z, use_sdpa=False).pow(2).mean().sqrt()
                       for op in OPS])
    assert rms.max() / rms.min() > 20  # unnormalised: the candidates' scales differ a lot
    ratio = rms / (scales - 1e-6)  # the scales carry an epsilon against division by 0
    maps = [i for i, op in enumerate(OPS) if op.family == "map"]
    assert torch.allclose(ratio[maps], torch.ones(len(maps), dtype=torch.float64), rtol=1e-6)
    assert ratio.min() > 0.5 and ratio.max() < 2.0  # dot ones estimated on a row subsample
    assert not scales.requires_grad


def test_the_search_module_builds_normalised_edges() -> None:
    module = SearchModule(num_classes=3, candidate_norm=True, num_nodes=2,
                          backbone_kwargs={"widths": [16, 32, 64], "depths": [1, 1, 1],
                                           "stem_width": 8})
    edges = [m for m in module.model.modules() if isinstance(m, MixedEdge)]
    assert edges and all(e.normalize for e in edges)
    assert module.model(torch.randn(2, 3, 8, 16, 16)).shape == (2, 3)
    assert not any(e.normalize for e in SearchModule(num_classes=3).model.modules()
                   if isinstance(e, MixedEdge))
