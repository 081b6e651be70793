"""Baseline blocks and create_block: shapes, identity at init, the math of each block."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from supernet import ArchParameters, create_block
from supernet.blocks import (
    CinST,
    DoubleAttention,
    NonLocalBlock,
    STinC,
    channel_major_attention,
)
from supernet.factory import BLOCK_NAMES
from supernet.ops import PointwiseConv3d

AWKWARD = [
    (1, 8, 1, 5, 7),  # batch 1, T=1, odd H != W
    (2, 8, 3, 1, 4),  # H = 1
    (2, 8, 4, 6, 3),  # H != W, odd W
    (1, 8, 2, 1, 1),  # a single position per frame
]
NODES = [("dot.spatiotemporal.softmax", 0), ("map.temporal.sigmoid", 1), ("dot.spatial.relu", 0)]
RESIDUAL = ["nonlocal", "nonlocal_dot", "a2", "search", "cell"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _kwargs(name: str) -> dict:
    if name == "search":
        return {"arch": ArchParameters(3)}
    if name == "cell":
        return {"nodes": NODES}
    return {}


@pytest.mark.parametrize("shape", AWKWARD)
@pytest.mark.parametrize("name", BLOCK_NAMES)
def test_every_block_keeps_shape_and_backprops(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    block = create_block(name, shape[1], **_kwargs(name))
    x = torch.randn(shape, requires_grad=True)
    y = block(x)
    assert y.shape == x.shape
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("position", ["coords", "sincos"])
@pytest.mark.parametrize("shape", AWKWARD[:3])
def test_nonlocal_with_position_keeps_shape(position: str, shape: tuple[int, ...]) -> None:
    block = create_block("nonlocal", shape[1], position=position)
    assert block(torch.randn(shape)).shape == shape


@pytest.mark.parametrize("name", RESIDUAL)
def test_residual_blocks_are_identity_at_init(name: str) -> None:
    torch.manual_seed(0)
    block = create_block(name, 16, **_kwargs(name))
    x = torch.randn(2, 16, 3, 6, 5)
    torch.testing.assert_close(block(x), x)  # training mode: BN(.) = beta = 0
    block.eval()
    torch.testing.assert_close(block(x), x)


@pytest.mark.parametrize("name", ["cinst", "stinc"])
def test_aia_blocks_gate_between_zero_and_one(name: str) -> None:
    x = torch.randn(2, 16, 3, 6, 5)
    y = create_block(name, 16)(x)
    assert y.shape == x.shape
    assert (y.abs() <= x.abs() + 1e-6).all() and (y * x >= 0).all()


@pytest.mark.parametrize("impl", ["sdpa", "auto"])
@pytest.mark.parametrize("mode", ["softmax", "dot"])
@pytest.mark.parametrize("position", ["none", "coords", "sincos"])
def test_nonlocal_fast_path_equals_explicit_affinity(mode: str, position: str, impl: str
                                                     ) -> None:
    torch.manual_seed(0)
    fast = NonLocalBlock(24, mode=mode, position=position, impl=impl)
    torch.nn.init.normal_(fast.bn.weight)  # leave the identity so the attention shows
    slow = NonLocalBlock(24, mode=mode, position=position, impl="explicit")
    slow.load_state_dict(fast.state_dict())
    fast, slow = fast.double(), slow.double()
    x = torch.randn(2, 24, 3, 7, 6, dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    y, y2 = fast(x), slow(x2)
    torch.testing.assert_close(y, y2)
    g = torch.randn_like(y)
    y.backward(g)
    y2.backward(g)
    torch.testing.assert_close(x.grad, x2.grad)


def test_nonlocal_matches_its_definition() -> None:
    """softmax(theta^T phi / sqrt(d)) g with phi, g on the 1x2x2 max-pooled input."""
    torch.manual_seed(0)
    b = NonLocalBlock(8)
    torch.nn.init.ones_(b.bn.weight)
    b.eval()
    x = torch.randn(1, 8, 2, 4, 6)
    xp = F.max_pool3d(x, (1, 2, 2))
    theta = b.theta(x).flatten(2)[0]  # (d, L)
    phi, g = b.phi(xp).flatten(2)[0], b.g(xp).flatten(2)[0]  # (d, Lk)
    a = torch.softmax(theta.T @ phi / 4 ** 0.5, -1)  # (L, Lk); d = 4
    y = (g @ a.T).reshape(1, 4, 2, 4, 6)
    torch.testing.assert_close(b(x), x + b.bn(b.out(y)), atol=1e-5, rtol=1e-5)


def test_nonlocal_uses_the_flash_kernel_on_cpu() -> None:
    """4-D contiguous inputs: SDPA must not fall back to the math path (an L x Lk matrix)."""
    b = NonLocalBlock(16)
    x = torch.randn(1, 16, 2, 8, 8, requires_grad=True)
    with torch.profiler.profile() as prof:
        b(x).sum().backward()
    names = {e.name for e in prof.events()}
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in names
    assert "aten::_scaled_dot_product_attention_math" not in names


def _ops(block: torch.nn.Module, x: torch.Tensor) -> set[str]:
    with torch.profiler.profile() as prof:
        block(x).sum().backward()
    return {e.name for e in prof.events()}


def test_nonlocal_auto_keeps_small_affinities_and_flashes_large_ones() -> None:
    """impl="auto" on CPU: channel-major bmm attention while heads * Lk <= 2 C, else SDPA."""
    flash = "aten::_scaled_dot_product_flash_attention_for_cpu"
    small = _ops(NonLocalBlock(16, impl="auto"), torch.randn(1, 16, 2, 8, 8, requires_grad=True))
    assert flash not in small and "aten::baddbmm" in small  # Lk = 32 <= 32
    large = _ops(NonLocalBlock(16, impl="auto"), torch.randn(1, 16, 2, 10, 8, requires_grad=True))
    assert flash in large  # Lk = 40 > 32
    heads = _ops(NonLocalBlock(16, impl="auto", heads=2),
                 torch.randn(1, 16, 2, 8, 8, requires_grad=True))
    assert flash in heads  # 2 heads x 32 keys > 32
    assert create_block("nonlocal", 16).impl == "auto"


@pytest.mark.parametrize("heads", [1, 2])
def test_nonlocal_auto_equals_explicit_with_heads(heads: int) -> None:
    torch.manual_seed(0)
    fast = NonLocalBlock(32, heads=heads, impl="auto").double()
    torch.nn.init.normal_(fast.bn.weight)
    slow = NonLocalBlock(32, heads=heads, impl="explicit").double()
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(2, 32, 2, 5, 6, dtype=torch.float64)  # Lk = 18: channel-major path
    outs = []
    for block in (fast, slow):
        xr = x.clone().requires_grad_()
        y = block(xr)
        y.backward(torch.cos(y.detach()))
        outs.append([y.detach(), xr.grad, *(p.grad for p in block.parameters())])
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b)


def test_channel_major_attention_gradients() -> None:
    torch.manual_seed(0)
    q = torch.randn(3, 4, 10, dtype=torch.float64, requires_grad=True)
    k = torch.randn(3, 4, 6, dtype=torch.float64, requires_grad=True)
    v = torch.randn(3, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: channel_major_attention(a, b, c, 0.7),
                                    (q, k, v))
    ref = torch.softmax(q.transpose(1, 2) @ k * 0.7, -1) @ v.transpose(1, 2)  # (B, L, dv)
    with torch.no_grad():  # the plain-op path
        torch.testing.assert_close(channel_major_attention(q, k, v, 0.7), ref.transpose(1, 2))


@pytest.mark.parametrize("bias", [True, False])
def test_pointwise_conv_equals_conv3d(bias: bool) -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(6, 5, 1, bias=bias).double()
    fast = PointwiseConv3d(6, 5, bias=bias).double()
    assert fast.state_dict().keys() == conv.state_dict().keys()
    fast.load_state_dict(conv.state_dict())
    x = torch.randn(2, 6, 3, 4, 5, dtype=torch.float64)
    for inp in (x, x.contiguous(memory_format=torch.channels_last_3d)):  # bmm, then conv
        grads = []
        for m in (fast, conv):
            m.zero_grad()
            xr = inp.clone().requires_grad_()
            y = m(xr)
            y.backward(torch.cos(y.detach()))
            grads.append([y.detach(), xr.grad, *(p.grad for p in m.parameters())])
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b)


def test_parameter_counts_of_baselines() -> None:
    with torch.device("meta"):
        assert sum(p.numel() for p in NonLocalBlock(512).parameters()) == 526_592
        assert sum(p.numel() for p in NonLocalBlock(1024).parameters()) == 2_101_760
        a2 = DoubleAttention(512)
        assert (a2.m, a2.n) == (128, 128)
        assert sum(p.numel() for p in a2.parameters()) == 4 * 512 * 128 + 3 * 128 + 512 + 1024
        assert sum(p.numel() for p in CinST(2048).parameters()) == 224
        assert sum(p.numel() for p in STinC(64).parameters()) == 224


def test_double_attention_gathers_then_distributes() -> None:
    torch.manual_seed(0)
    b = DoubleAttention(16, m=6, n=5)
    torch.nn.init.ones_(b.bn.weight)
    b.eval()
    x = torch.randn(2, 16, 3, 4, 5)
    a = b.phi(x).flatten(2)  # (N, m, L)
    bb = b.theta(x).flatten(2).softmax(-1)  # attention over positions
    v = b.rho(x).flatten(2).softmax(1)  # attention over the n descriptors
    z = torch.einsum("nml,nkl,nkp->nmp", a, bb, v).reshape(2, 6, 3, 4, 5)
    torch.testing.assert_close(b(x), x + b.bn(b.out(z)), atol=1e-5, rtol=1e-5)


def test_aia_composition_orders() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 8, 3, 5, 4)
    c = CinST(8).eval()
    s = STinC(8).eval()
    torch.testing.assert_close(c(x), x * c.g_st(x * c.g_c(x)))
    torch.testing.assert_close(s(x), x * s.g_c(x * s.g_st(x)))
    assert c.g_c(x).shape == (2, 1, 3, 5, 4)  # one weight per position
    assert c.g_st(x).shape == x.shape  # channel- and position-dependent
    # with the ST convs at zero, g_ST = sigmoid(0) = 1/2 whatever the inner gate did
    for gate in (c.g_st.t, c.g_st.h, c.g_st.w):
        torch.nn.init.zeros_(gate.conv.weight)
    torch.testing.assert_close(c(x), 0.5 * x)


def test_create_block_errors_list_what_is_accepted() -> None:
    with pytest.raises(ValueError, match="accepted: none, nonlocal, nonlocal_dot, a2"):
        create_block("nl", 16)
    with pytest.raises(ValueError, match="unknown keyword.*accepted: m, n"):
        create_block("a2", 16, position="coords")
    with pytest.raises(ValueError, match="arch"):
        create_block("search", 16)
    with pytest.raises(ValueError, match="nodes"):
        create_block("cell", 16)
    with pytest.raises(ValueError, match="unknown non-local mode|unknown position"):
        create_block("nonlocal", 16, position="learned")
    assert isinstance(create_block("none", 16, position="coords"), torch.nn.Identity)


def test_create_block_builds_cells_from_a_genotype(tmp_path) -> None:
    genotype_mod = pytest.importorskip("derive.genotype")
    g = genotype_mod.Genotype(nodes=NODES, position="coords")
    cell = create_block("cell", 32, genotype=g)
    assert cell.position == "coords" and [n.op for n in cell.nodes] == [n for n, _ in NODES]
    path = tmp_path / "cell.json"
    genotype_mod.save_genotype(g, path)
    from_file = create_block(str(path), 32)
    assert type(from_file) is type(cell) and from_file.nodes == cell.nodes
    with pytest.raises(ValueError, match="build"):
        create_block("cell", 32, genotype=object())


@pytest.mark.parametrize("mode", ["softmax", "dot"])
def test_nonlocal_heads_sdpa_equals_explicit_and_keeps_the_macs(mode: str) -> None:
    from supernet.counting import count_flops

    torch.manual_seed(0)
    x = torch.randn(2, 32, 4, 6, 6)
    fast = NonLocalBlock(32, mode=mode, heads=4).eval()
    slow = NonLocalBlock(32, mode=mode, heads=4, impl="explicit").eval()
    slow.load_state_dict(fast.state_dict())
    torch.nn.init.ones_(fast.bn.weight)
    torch.nn.init.ones_(slow.bn.weight)
    torch.testing.assert_close(fast(x), slow(x), atol=1e-5, rtol=1e-4)
    one = NonLocalBlock(32, mode=mode).eval()
    one.load_state_dict(fast.state_dict())
    torch.nn.init.ones_(one.bn.weight)
    assert not torch.allclose(one(x), fast(x))  # the heads attend on their own
    macs, macs_one = count_flops(fast, x.shape)["macs"], count_flops(one, x.shape)["macs"]
    # softmax: the same products split over heads; dot: (d/h)^2 per head instead of d^2
    assert macs == macs_one if mode == "softmax" else macs < macs_one
    assert "heads=4" in repr(fast)


def test_nonlocal_heads_must_divide_the_width() -> None:
    with pytest.raises(ValueError, match="heads=3 must be a positive integer dividing the "
                                         "inner width 16"):
        NonLocalBlock(32, heads=3)
    with pytest.raises(ValueError, match="heads"):
        create_block("nonlocal", 32, heads=0)
    assert create_block("nonlocal", 32, heads=2).heads == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (flash kernels)")
def test_multi_head_nonlocal_reaches_the_flash_kernel_on_cuda() -> None:
    """At res4 width (d = 512) one head exceeds the flash kernels' head dim; 4 heads of
    128 run under the flash-only backend in bf16."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    block = NonLocalBlock(1024, heads=4).cuda().to(torch.bfloat16)
    x = torch.randn(2, 1024, 4, 14, 14, device="cuda", dtype=torch.bfloat16)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        y = block(x)
    assert y.shape == x.shape and torch.isfinite(y.float()).all()
