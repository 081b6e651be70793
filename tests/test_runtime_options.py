"""Retrain's runtime options: channels-last memory format and torch.compile give the same
network (same outputs, same checkpoint keys) through the real CLI, and bad values are
refused with one line and exit 2."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from datamodules.synth import ensure_synthetic
from supernet.app.cli import main as attnas
from supernet.factory import BLOCK_NAMES
from supernet.retrain import VideoClassifier

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"widths": [8, 16, 32], "depths": [1, 1, 1], "stem_width": 8}


def test_channels_last_computes_the_same_network() -> None:
    torch.manual_seed(0)
    plain = VideoClassifier(3, block="nonlocal", backbone_kwargs=TINY).eval()
    torch.manual_seed(0)
    last = VideoClassifier(3, block="nonlocal", backbone_kwargs=TINY,
                           memory_format="channels_last").eval()
    last.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 8, 16, 16)
    torch.testing.assert_close(last(x), plain(x), rtol=1e-4, atol=1e-5)
    conv = next(m for m in last.modules() if isinstance(m, torch.nn.Conv3d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)


def test_compiled_channels_last_run_through_the_cli(tmp_path: Path) -> None:
    root = ensure_synthetic(tmp_path / "data", classes=2, videos_per_class=6, frames=8,
                            size=16, seed=2, workers=1)
    out = tmp_path / "runs"
    argv = ["retrain", "fit", f"--data.root={root}", "--data.num_frames=8",
            "--data.crop_size=16", "--data.batch_size=4", "--data.num_workers=0",
            "--model.block=nonlocal", '--model.backbone_kwargs={"widths": [8, 16, 32], '
            '"depths": [1, 1, 1], "stem_width": 8}', "--model.memory_format=channels_last",
            "--model.compile=true", "--model.compile_backend=eager",
            "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={out}", f"--trainer.logger.init_args.save_dir={out}"]
    assert attnas(argv) == 0
    ckpt = next(out.rglob("last.ckpt"))
    keys = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert keys and not any("_orig_mod" in k or "_compiled" in k for k in keys)
    assert any(k.startswith("model.") for k in keys)


@pytest.mark.parametrize("option,message", [
    ("--model.memory_format=nhwc", "memory_format"),
    ("--model.compile_backend=warp", "unknown compile_backend 'warp'"),
])
def test_bad_runtime_options_exit_2(tmp_path: Path, option: str, message: str,
                                    capsys: pytest.CaptureFixture) -> None:
    root = ensure_synthetic(tmp_path / "data", classes=2, videos_per_class=3, frames=8,
                            size=16, seed=2, workers=1)
    argv = ["retrain", "fit", "--data.root", str(root), "--model.compile=true",
            option, f"--trainer.default_root_dir={tmp_path}"]
    assert attnas(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


# -- the layout every module trains in by default on the CPU ----------------------------

def _same_step(make: Callable[[], torch.nn.Module], x: torch.Tensor, train: bool = True
               ) -> None:
    """One forward+backward in each layout from the same weights: same loss, same
    gradients (within float32 rounding: only the order of the sums differs). ``train``:
    BatchNorm on batch statistics (ill-conditioned where a deep network's last maps are
    1x1 at batch 2, so the deep backbones compare in eval mode)."""
    torch.manual_seed(0)
    plain = make()
    torch.manual_seed(0)
    last = make()
    last.load_state_dict(plain.state_dict())
    plain.to(memory_format=torch.contiguous_format)
    last.to(memory_format=torch.channels_last_3d)
    results = []
    for net in (plain, last):
        net.train(train)
        torch.manual_seed(1)  # the same dropout / sampled path in both
        out = net(x)
        out.square().mean().backward()
        results.append((out.detach(), {n: p.grad.clone() for n, p in net.named_parameters()
                                       if p.grad is not None}))
    (a, ga), (b, gb) = results
    torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4)
    assert ga.keys() == gb.keys() and ga
    for name in ga:
        torch.testing.assert_close(gb[name], ga[name], rtol=1e-2, atol=1e-4, msg=name)


@pytest.mark.parametrize("block", [b for b in BLOCK_NAMES if b != "cell"] + ["cell"])
def test_every_block_trains_the_same_in_channels_last(block: str, tmp_path: Path) -> None:
    from supernet.factory import create_backbone
    from supernet.genotype import Genotype, save_genotype

    if block == "search":
        kw = {"block_kwargs": {"position": "sincos"}}
    elif block == "cell":
        path = tmp_path / "cell.json"
        save_genotype(Genotype([("dot.spatiotemporal.softmax", 0), ("map.temporal.sigmoid", 1),
                                ("dot.spatial.relu", 0)], position="sincos"), path)
        block, kw = str(path), {}
    else:
        kw = {}
    _same_step(lambda: create_backbone("proxy", 3, block, **TINY, **kw),
               torch.randn(2, 3, 8, 16, 16))


@pytest.mark.parametrize("backbone,kwargs,shape", [
    ("s3d", {"gated": True}, (2, 3, 8, 32, 32)),
    ("slowfast_r50", {"width_div": 8}, (2, 3, 16, 32, 32)),
    ("i3d_r50", {"width_div": 8}, (2, 3, 8, 32, 32)),
])
def test_other_backbones_train_the_same_in_channels_last(backbone: str, kwargs: dict,
                                                         shape: tuple[int, ...]) -> None:
    from supernet.factory import create_backbone

    _same_step(lambda: create_backbone(backbone, 3, "nonlocal", **kwargs), torch.randn(shape),
               train=False)


def test_auto_layout_is_channels_last_on_the_cpu_and_a_choice_elsewhere() -> None:
    from supernet.memory_format import layout_for
    from supernet.search import SearchModule

    assert layout_for("auto", "cpu") == torch.channels_last_3d
    assert layout_for("auto", "cuda") == torch.contiguous_format
    assert layout_for("contiguous", "cpu") == torch.contiguous_format
    assert layout_for("channels_last", "cuda") == torch.channels_last_3d
    def spatial_convs(module: torch.nn.Module) -> list[torch.Tensor]:
        # (a 1x1 or Cx1x1 kernel is contiguous in both layouts: it tells nothing)
        return [m.weight for m in module.modules() if isinstance(m, torch.nn.Conv3d)
                and m.weight.shape[1] > 1 and m.weight.shape[-1] > 1]

    for module in (SearchModule(3, backbone_kwargs=TINY),
                   VideoClassifier(3, backbone_kwargs=TINY)):
        weights = spatial_convs(module)
        assert weights and all(w.is_contiguous(memory_format=torch.channels_last_3d)
                               and not w.is_contiguous() for w in weights)
    weights = spatial_convs(VideoClassifier(3, backbone_kwargs=TINY, memory_format="contiguous"))
    assert weights and all(w.is_contiguous() for w in weights)
    with pytest.raises(ValueError, match="unknown memory_format 'nhwc'; accepted: auto"):
        SearchModule(3, memory_format="nhwc")
