"""S3D: torchvision's parameter count, shapes at odd sizes, its MACs, and every block
type inserted at its default positions through the one insertion path."""

from __future__ import annotations

import pytest
import torch

from supernet import create_backbone
from supernet.backbones import S3D_PRESETS, count_parameters, s3d
from supernet.cells import ArchParameters
from supernet.counting import count_flops

pytestmark = pytest.mark.usefixtures("one_thread")


def test_parameters_match_torchvision_s3d() -> None:
    assert count_parameters(s3d(400)) == 8_320_048  # torchvision.models.video.s3d
    gated = s3d(400, gated=True)
    assert count_parameters(gated) > 8_320_048 and gated.name == "s3d_g"
    assert count_parameters(create_backbone("s3d", 400)) == 8_320_048


def test_macs_at_the_reference_clips() -> None:
    """Counted on meta, attention-free backbone: the figures docs/backbones.md reports."""
    with torch.device("meta"):
        model = s3d(400)
    assert count_flops(model, (1, 3, 16, 224, 224))["macs"] == 17_978_771_456
    assert count_flops(model, (1, 3, 8, 224, 224))["macs"] == 8_989_590_528


@pytest.mark.parametrize("shape", [(2, 3, 3, 17, 23), (2, 3, 5, 37, 29), (2, 3, 1, 9, 9),
                                   (2, 2, 4, 32, 32)])
def test_odd_sizes_give_logits(shape: tuple[int, ...]) -> None:
    model = s3d(7, in_channels=shape[1])
    out = model(torch.randn(*shape))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_default_positions_see_each_blocks_own_width() -> None:
    """Inception blocks of one stage differ in width (3b: 256, 3c: 480): an inserted
    block is built for the block it follows."""
    model = create_backbone("s3d", 10, block="nonlocal")
    assert model.positions == {k: tuple(v) for k, v in S3D_PRESETS["5blocks"].items()}
    widths = {name: blk.channels for name, blk in model.inserted_blocks()}
    assert widths == {"mixed3.0": 256, "mixed3.1": 480, "mixed4.0": 512, "mixed4.2": 512,
                      "mixed4.4": 832}


@pytest.mark.parametrize("block", ["none", "nonlocal", "nonlocal_dot", "a2", "cinst",
                                   "stinc", "cell", "search"])
def test_every_block_inserts_and_trains(block: str) -> None:
    kwargs: dict = {}
    if block == "cell":
        kwargs = {"nodes": [("dot.spatiotemporal.softmax", 0), ("map.temporal.sigmoid", 1)],
                  "position": "sincos"}
    if block == "search":
        kwargs = {"arch": ArchParameters(2), "position": "sincos"}
    torch.manual_seed(0)
    model = create_backbone("s3d", 5, block=block, block_kwargs=kwargs)
    assert len(model.inserted_blocks()) == 5
    x = torch.randn(2, 3, 4, 32, 32)
    loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([1, 3]))
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for _, b in model.inserted_blocks() for p in b.parameters()]
    if block != "none":
        assert grads and all(g is not None for g in grads)


def test_bad_s3d_input_is_refused() -> None:
    with pytest.raises(ValueError, match="pretrained checkpoints are 3-D ResNets"):
        create_backbone("s3d", 5, pretrained="x.pt")
    with pytest.raises(ValueError, match="unknown stage 'res3'"):
        create_backbone("s3d", 5, block="nonlocal", positions={"res3": [1]})
    with pytest.raises(ValueError, match="dropout"):
        s3d(5, dropout=1.5)
