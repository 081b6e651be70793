"""SlowFast-R50: pytorchvideo's parameter count and MACs, shapes for odd frame counts and
sizes, blocks in either pathway through the one insertion path, and bad clips refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from datamodules.synth import ensure_synthetic
from supernet import create_backbone
from supernet.app.cli import main as attnas
from supernet.backbones import count_parameters, slowfast_r50
from supernet.counting import count_flops

pytestmark = pytest.mark.usefixtures("one_thread")


def test_parameters_and_macs_match_pytorchvideo_slowfast_r50() -> None:
    assert count_parameters(slowfast_r50(400)) == 34_566_488
    with torch.device("meta"):
        model = slowfast_r50(400)
    macs = count_flops(model, (1, 3, 32, 224, 224))["macs"]  # slow 8 + fast 32 frames
    assert abs(macs / 50.31e9 - 1) < 0.01


SMALL = {"width_div": 8, "depths": (1, 1, 1, 1)}


@pytest.mark.parametrize("shape", [(2, 3, 4, 17, 23), (2, 3, 12, 9, 31), (2, 2, 8, 16, 16)])
def test_odd_frame_counts_and_sizes(shape: tuple[int, ...]) -> None:
    model = slowfast_r50(5, in_channels=shape[1], **SMALL)
    out = model(torch.randn(*shape))
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    slow, fast = model.pathways(torch.randn(*shape))
    assert slow.shape[2] == shape[2] // 4 and fast.shape[2] == shape[2]


@pytest.mark.parametrize("positions", ["5blocks", "fast5blocks", "both"])
def test_blocks_in_either_pathway_train(positions: str) -> None:
    model = create_backbone("slowfast_r50", 5, block="nonlocal", positions=positions,
                            width_div=8, depths=(1, 4, 6, 1))
    names = [n for n, _ in model.inserted_blocks()]
    assert names and all(n.split(".")[0] in ("res3", "res4", "fast_res3", "fast_res4")
                         for n in names)
    widths = {n: b.channels for n, b in model.inserted_blocks()}
    for n, c in widths.items():
        stage = n.split(".")[0]
        assert c == model.stages[stage].width
    loss = model(torch.randn(2, 3, 8, 32, 32)).logsumexp(1).sum()
    loss.backward()
    assert all(p.grad is not None for _, b in model.inserted_blocks() for p in b.parameters())


def test_a_clip_that_the_frame_ratio_does_not_divide_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ValueError, match="not a multiple of frame_ratio=4"):
        slowfast_r50(5, **SMALL)(torch.randn(1, 3, 6, 16, 16))
    root = ensure_synthetic(tmp_path / "data", classes=2, videos_per_class=4, frames=8,
                            size=16, seed=1, workers=1)
    argv = ["retrain", "fit", f"--data.root={root}", "--data.num_frames=6",
            "--data.crop_size=16", "--data.batch_size=2", "--data.num_workers=0",
            "--model.backbone=slowfast_r50", "--model.positions=none",
            f"--model.backbone_kwargs={json.dumps({'width_div': 8, 'depths': [1, 1, 1, 1]})}",
            "--trainer.max_epochs=1", f"--trainer.default_root_dir={tmp_path / 'o'}",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'o'}"]
    assert attnas(argv) == 2
    err = capsys.readouterr().err
    assert "not a multiple of the backbone's fast/slow frame_ratio=4" in err
    assert len([x for x in err.splitlines() if x.strip()]) == 1
    assert not list((tmp_path / "o").rglob("*.ckpt"))
    with pytest.raises(ValueError, match="width_div"):
        slowfast_r50(5, width_div=0)


@pytest.mark.parametrize("fusion", ["tconv", "tsample", "avgpool", "sum"])
@pytest.mark.parametrize("shape", [(2, 3, 4, 17, 23), (2, 3, 12, 9, 31), (2, 3, 20, 33, 15)])
def test_every_fusion_operator_keeps_shapes(fusion: str, shape: tuple[int, ...]) -> None:
    model = slowfast_r50(5, fusion=fusion, **SMALL)
    out = model(torch.randn(*shape))
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    extra = [lat.extra for lat in model.laterals.values()]
    fast = [8 // 8, *(w // 8 // 8 for w in (256, 512, 1024))]
    assert extra == {"tconv": [2 * c for c in fast], "tsample": fast, "avgpool": fast,
                     "sum": [0, 0, 0, 0]}[fusion]


def test_unknown_fusion_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown fusion op 'mean'; accepted: tconv, tsample"):
        slowfast_r50(5, fusion="mean", **SMALL)


def test_a_cell_search_runs_in_both_pathways(tmp_path: Path) -> None:
    """The attention stage of a two-stream search: supernet cells in the slow and the fast
    pathway, selected within a budget, through the real search CLI."""
    root = ensure_synthetic(tmp_path / "data", classes=2, videos_per_class=6, frames=8,
                            size=16, seed=2, workers=1)
    out = tmp_path / "o"
    argv = ["search", "fit", f"--data.root={root}", "--data.num_frames=8",
            "--data.crop_size=16", "--data.batch_size=4", "--data.num_workers=0",
            "--data.cache=memory", "--data.search=true", "--model.backbone=slowfast_r50",
            "--model.positions=both", '--model.backbone_kwargs={"width_div": 8}',
            "--model.num_nodes=1", "--model.strategy=uniform", "--model.select=perturb",
            "--model.select_val_batches=1", "--model.select_calib_batches=1",
            "--model.cost_target=1x", "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
            "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={out}",
            f"--trainer.logger.init_args.save_dir={out}"]
    assert attnas(argv) == 0
    doc = json.loads(sorted(out.rglob("genotype.json"))[-1].read_text())
    cost = doc["provenance"]["cost"]
    assert len(cost["positions"]) == 10  # 5 slow + 5 fast insertion points
    assert {c for c, *_ in cost["positions"]} == {64, 8, 128, 16}
    assert cost["macs"] <= doc["provenance"]["selection"]["budget"]["target_macs"]
