"""I3D-R50 and the proxy: parameter counts, insertion positions, every block type
forward+backward, search parameters, receptive field, and inflation from 2-D weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from supernet import ArchParameters, FixedCell, SearchCell, create_backbone
from supernet.backbones import count_parameters
from supernet.factory import BLOCK_NAMES
from supernet.inflate import inflate_state_dict, load_pretrained_2d

NODES = [("dot.spatiotemporal.softmax", 0), ("map.spatial.sigmoid", 0), ("dot.temporal.relu", 1)]
I3D_PARAMS = 28_043_472
NL_PARAMS = {512: 526_592, 1024: 2_101_760}


pytestmark = pytest.mark.usefixtures("one_thread")


def _block_kwargs(block: str) -> dict | None:
    return {"nodes": NODES} if block == "cell" else None


def _meta(*args, **kwargs):
    with torch.device("meta"):
        return create_backbone(*args, **kwargs)


# -- parameter counts and positions ---------------------------------------------------------

def test_i3d_r50_parameter_counts() -> None:
    assert count_parameters(_meta("i3d_r50", 400, positions="none")) == I3D_PARAMS
    assert count_parameters(_meta("i3d_r50", 400, block="nonlocal")) == 35_401_936
    ten = I3D_PARAMS + 4 * NL_PARAMS[512] + 6 * NL_PARAMS[1024]
    assert count_parameters(_meta("i3d_r50", 400, "nonlocal", "10blocks")) == ten
    # "none" inserts identities: same count wherever they go
    assert count_parameters(_meta("i3d_r50", 400, "none", "10blocks")) == I3D_PARAMS


def test_i3d_r50_width_div_narrows_every_stage_and_keeps_the_depth(tmp_path) -> None:
    half = _meta("i3d_r50", 4, "nonlocal", width_div=2)
    full = _meta("i3d_r50", 4, "nonlocal")
    assert [b.channels for b in half.blocks] == [256, 256, 512, 512, 512]
    assert half.stage_depths() == full.stage_depths() and half.positions == full.positions
    # about a quarter of the parameters (convs scale with width squared)
    assert 0.2 < count_parameters(half) / count_parameters(full) < 0.3
    x = torch.randn(2, 2, 8, 32, 32)
    torch.manual_seed(0)
    net = create_backbone("i3d_r50", 4, "nonlocal", width_div=2, in_channels=2)
    net(x).sum().backward()
    for bad in (3, 0, 128, True):
        with pytest.raises(ValueError, match="width_div must be a divisor of 64"):
            create_backbone("i3d_r50", 4, width_div=bad)
    with pytest.raises(ValueError, match="pretrained weights are full width"):
        create_backbone("i3d_r50", 4, width_div=2, pretrained_2d=str(tmp_path / "r50.pth"))


def test_default_positions_are_the_nonlocal_five_blocks() -> None:
    m = _meta("i3d_r50", 400, block="nonlocal")
    assert m.positions == {"res3": (1, 3), "res4": (1, 3, 5)}
    assert [n for n, _ in m.inserted_blocks()] == ["res3.1", "res3.3", "res4.1", "res4.3",
                                                  "res4.5"]
    assert [b.channels for b in m.blocks] == [512, 512, 1024, 1024, 1024]
    same = _meta("i3d_r50", 400, "nonlocal", {"res3": [3, 1, 1], "res4": [1, 3, 5]})
    assert same.positions == m.positions
    js = _meta("i3d_r50", 400, "a2", '{"res5": [2]}')
    assert [n for n, _ in js.inserted_blocks()] == ["res5.2"]
    assert _meta("i3d_r50", 400, "a2", "none").inserted_blocks() == []


def test_proxy_defaults() -> None:
    p = create_backbone("proxy", 7, block="nonlocal")
    assert p.positions == {"res3": (1,), "res4": (1,)}
    assert len(p.blocks) == 2
    assert p.receptive_field() == (10, 45, 45)
    assert count_parameters(create_backbone("proxy", 7)) < 300_000
    narrow = create_backbone("proxy", 7, widths=(32, 64, 128, 256), depths=(1, 1, 2, 1),
                             positions={"res4": [0, 1], "res5": [0]}, block="a2")
    assert [n for n, _ in narrow.inserted_blocks()] == ["res4.0", "res4.1", "res5.0"]
    assert narrow(torch.randn(1, 3, 4, 32, 32)).shape == (1, 7)
    deep = create_backbone("proxy", 7, depths=(1, 3, 1), block="a2")
    assert deep.positions == {"res3": (2,), "res4": (0,)}
    two = create_backbone("proxy", 7, widths=(32, 64), depths=(1, 2), block="a2",
                          positions="all")
    assert two.positions == {"res3": (0, 1)}


def test_proxy_receptive_field_matches_gradient_support() -> None:
    """The analytic RF is where a res4 output can see the input (eval-mode BN)."""
    torch.manual_seed(0)
    p = create_backbone("proxy", 3).eval()
    for m in p.modules():  # undo the zero-init of the last BN, which hides the residual path
        if isinstance(m, torch.nn.BatchNorm3d):
            torch.nn.init.ones_(m.weight)
    feats = {}
    p.stages["res4"].register_forward_hook(lambda m, i, o: feats.setdefault("res4", o))
    x = torch.randn(1, 3, 16, 96, 96, requires_grad=True)
    p(x)
    f = feats["res4"]
    f[0, :, f.shape[2] // 2, f.shape[3] // 2, f.shape[4] // 2].sum().backward()
    support = x.grad[0].abs().sum(0) > 0  # (T, H, W)
    extent = []
    for dims in ((1, 2), (0, 2), (0, 1)):
        idx = support.any(dim=dims[1]).any(dim=dims[0]).nonzero().flatten()
        extent.append(int(idx.max() - idx.min() + 1))
    assert tuple(extent) == p.receptive_field() == (10, 45, 45)


@pytest.mark.parametrize("positions, match", [
    ({"res3": [4]}, r"res3 has 4 blocks, so indices are 0\.\.3"),
    ({"res4": [0, 6]}, r"res4 has 6 blocks"),
    ({"res6": [0]}, r"unknown stage 'res6'; stages: res2 \(3 blocks\), res3 \(4 blocks\)"),
    ("20blocks", r"accepted: none, 5blocks, 10blocks, default"),
    ({"res3": [True]}, r"out of range"),
])
def test_bad_positions_say_what_is_accepted(positions, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _meta("i3d_r50", 400, "nonlocal", positions)


def test_bad_names_and_keywords() -> None:
    with pytest.raises(ValueError, match="accepted: i3d_r50, proxy"):
        create_backbone("i3d_r101", 400)
    with pytest.raises(ValueError, match="unknown block 'nl'; accepted: none, nonlocal"):
        create_backbone("proxy", 4, block="nl")
    with pytest.raises(ValueError, match="unknown keyword.*widths"):
        create_backbone("i3d_r50", 4, widths=(1, 2))
    with pytest.raises(ValueError, match="pretrained_2d is supported for i3d_r50 only"):
        create_backbone("proxy", 4, pretrained_2d="x.pth")
    with pytest.raises(ValueError, match="no such file"):
        _meta("i3d_r50", 4, pretrained_2d="/nonexistent/r50.pth")


# -- forward + backward with every block type -----------------------------------------------

@pytest.mark.parametrize("block", BLOCK_NAMES)
def test_proxy_forward_backward_every_block(block: str) -> None:
    torch.manual_seed(0)
    model = create_backbone("proxy", 5, block=block, block_kwargs=_block_kwargs(block))
    x = torch.randn(2, 3, 8, 32, 32)
    logits = model(x)
    assert logits.shape == (2, 5)
    logits.logsumexp(1).sum().backward()
    assert all(p.grad is not None for p in model.weight_parameters() if p.requires_grad)


@pytest.fixture(scope="module")
def i3d_small_input() -> torch.Tensor:
    return torch.randn(1, 3, 4, 32, 32)


@pytest.mark.parametrize("block", BLOCK_NAMES)
def test_i3d_r50_forward_backward_every_block(block: str, i3d_small_input) -> None:
    torch.manual_seed(0)
    model = create_backbone("i3d_r50", 10, block=block, block_kwargs=_block_kwargs(block))
    logits = model(i3d_small_input)
    assert logits.shape == (1, 10) and torch.isfinite(logits).all()
    logits.sum().backward()
    grads = [b for _, b in model.inserted_blocks() if any(True for _ in b.parameters())]
    for blk in grads:
        assert any(p.grad is not None for p in blk.parameters())


def test_search_backbone_shares_one_arch() -> None:
    model = create_backbone("proxy", 5, block="search",
                            block_kwargs={"num_nodes": 2, "position": "coords"})
    assert isinstance(model.arch, ArchParameters) and model.arch.num_nodes == 2
    cells = model.blocks
    assert len(cells) == 2 and all(isinstance(c, SearchCell) for c in cells)
    assert all(c.arch is model.arch for c in cells)
    arch = model.arch_parameters()
    assert [p.shape for p in arch] == [(2, 24), (2, 2)]
    weights = model.weight_parameters()
    ids = {id(p) for p in arch}
    assert not any(id(p) in ids for p in weights)
    assert len(arch) + len(weights) == len(list(model.parameters()))
    for cell in cells:  # gamma = 0 makes the cells identities, so d(loss)/d(alpha) = 0
        torch.nn.init.ones_(cell.bn.weight)
    model(torch.randn(1, 3, 4, 32, 32)).logsumexp(1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in arch)
    plain = create_backbone("proxy", 5, block="cell", block_kwargs={"nodes": NODES})
    assert plain.arch_parameters() == [] and isinstance(plain.blocks[0], FixedCell)


def test_inserted_blocks_do_not_change_the_function_at_init() -> None:
    """The backbone is initialised before insertion: same seed -> same ResNet weights, and
    gamma-0 blocks are identities, so the logits agree."""
    x = torch.randn(2, 3, 4, 32, 32)
    torch.manual_seed(0)
    base = create_backbone("proxy", 5).eval()
    for block in ("nonlocal", "a2", "cell"):
        torch.manual_seed(0)
        model = create_backbone("proxy", 5, block=block, block_kwargs=_block_kwargs(block))
        torch.testing.assert_close(model.eval()(x), base(x))


# -- inflation from a 2-D ResNet-50 ----------------------------------------------------------

def _torchvision_r50_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A torchvision-format ResNet-50 state dict (keys and shapes), built without torchvision."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def bn(prefix: str, c: int) -> None:
        sd.update({f"{prefix}.weight": torch.rand(c, generator=g) + 0.5,
                   f"{prefix}.bias": torch.randn(c, generator=g),
                   f"{prefix}.running_mean": torch.randn(c, generator=g),
                   f"{prefix}.running_var": torch.rand(c, generator=g) + 0.5,
                   f"{prefix}.num_batches_tracked": torch.tensor(100)})

    def conv(key: str, *shape: int) -> None:
        sd[key] = torch.randn(*shape, generator=g) * 0.05

    conv("conv1.weight", 64, 3, 7, 7)
    bn("bn1", 64)
    in_ch = 64
    for i, (depth, inner) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=1):
        for j in range(depth):
            p = f"layer{i}.{j}"
            conv(f"{p}.conv1.weight", inner, in_ch, 1, 1)
            bn(f"{p}.bn1", inner)
            conv(f"{p}.conv2.weight", inner, inner, 3, 3)
            bn(f"{p}.bn2", inner)
            conv(f"{p}.conv3.weight", inner * 4, inner, 1, 1)
            bn(f"{p}.bn3", inner * 4)
            if j == 0:
                conv(f"{p}.downsample.0.weight", inner * 4, in_ch, 1, 1)
                bn(f"{p}.downsample.1", inner * 4)
            in_ch = inner * 4
    conv("fc.weight", 1000, 2048)
    sd["fc.bias"] = torch.zeros(1000)
    return sd


@pytest.fixture(scope="module")
def r50_2d() -> dict[str, torch.Tensor]:
    return _torchvision_r50_state()


def test_inflated_conv_reproduces_the_2d_conv_on_a_static_clip(r50_2d, tmp_path) -> None:
    path = tmp_path / "r50.pth"
    torch.save(r50_2d, path)
    model = create_backbone("i3d_r50", 10, block="nonlocal", pretrained_2d=str(path))
    stem = model.stem.conv
    assert stem.weight.shape == (64, 3, 5, 7, 7)
    frame = torch.randn(1, 3, 40, 36)
    clip = frame.unsqueeze(2).expand(-1, -1, 7, -1, -1)  # 7 identical frames
    y2d = F.conv2d(frame, r50_2d["conv1.weight"], stride=2, padding=3)
    with torch.no_grad():
        y3d = stem(clip)
    for t in range(2, 5):  # frames whose temporal window does not reach the zero padding
        torch.testing.assert_close(y3d[:, :, t], y2d, atol=1e-5, rtol=1e-4)
    # a temporally inflated bottleneck conv (kt = 3) and a copied BN
    blk = model.stages["res3"].blocks[0]
    assert blk.conv_a.weight.shape[2] == 3
    torch.testing.assert_close(blk.conv_a.weight.sum(2), r50_2d["layer2.0.conv1.weight"])
    torch.testing.assert_close(blk.bn_c.weight, r50_2d["layer2.0.bn3.weight"])
    torch.testing.assert_close(model.stages["res5"].blocks[0].shortcut[1].running_var,
                               r50_2d["layer4.0.downsample.1.running_var"])
    # the inserted blocks and the head keep their own initialisation
    assert all(b.bn.weight.abs().sum() == 0 for b in model.blocks)
    assert model.head.weight.shape == (10, 2048)


def test_bad_2d_checkpoint_names_the_keys(r50_2d) -> None:
    model = _meta("i3d_r50", 10, positions="none")
    bad = dict(r50_2d)
    del bad["layer3.2.conv2.weight"]
    bad["layer1.0.conv1.weight"] = torch.zeros(64, 64, 3, 3)
    bad["layer3.6.conv1.weight"] = torch.zeros(256, 1024, 1, 1)  # a ResNet-101 key
    with pytest.raises(ValueError) as err:
        inflate_state_dict(bad, model)
    msg = str(err.value)
    assert "1 missing: layer3.2.conv2.weight" in msg
    assert "1 mis-shaped: layer1.0.conv1.weight (64, 64, 3, 3) (expected (64, 64, 1, 1))" in msg
    assert "1 unexpected: layer3.6.conv1.weight" in msg
    assert "Expected keys like conv1.weight" in msg
    with pytest.raises(ValueError, match="not a torchvision-format ResNet-50"):
        load_pretrained_2d(model, {"conv1.weight": torch.zeros(64, 3, 7, 7)})


def test_a_flow_stem_is_inflated_from_the_rgb_filters_averaged(r50_2d) -> None:
    """Two-stream I3D's flow net: the 2-D RGB conv1 averaged over its input channels,
    copied to each flow channel, then inflated in time like the RGB stem."""
    model = create_backbone("i3d_r50", 10, block="none", in_channels=2,
                            pretrained_2d=dict(r50_2d))
    w = model.stem.conv.weight
    assert w.shape == (64, 2, 5, 7, 7)
    mean = r50_2d["conv1.weight"].mean(1)  # (64, 7, 7)
    torch.testing.assert_close(w[:, 0].sum(1), mean)  # inflation divides by kt
    torch.testing.assert_close(w[:, 1], w[:, 0])
    assert model(torch.randn(1, 2, 4, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize("positions", ["none", "default"])
def test_a_forward_splits_at_a_named_block_with_or_without_a_block_inserted(
        positions: str) -> None:
    torch.manual_seed(0)
    model = create_backbone("proxy", 3, positions=positions, widths=(16, 32, 64),
                            depths=(1, 2, 1), block="nonlocal").eval()
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        whole = model(x)
        for point in [("res3", 0), ("res3", 1), ("res4", 0)]:
            h = model.forward_prefix(x, point)
            assert torch.allclose(model.forward_suffix(h, point), whole, atol=1e-5)
        if positions == "none":  # nothing inserted: no default point to split at
            with pytest.raises(ValueError, match="no inserted block"):
                model.forward_prefix(x)
