"""Kinetics-pretrained 3-D ResNets in the key layouts of pytorchvideo, PySlowFast, mmaction2
and attnas (state dicts generated from those layouts, no downloads): every backbone tensor
loads, inserted attention blocks start as identities, bad files are one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from supernet.factory import create_backbone
from supernet.pretrained import _key_map, detect_format, load_pretrained


def _their_state(model, layout: str) -> dict[str, torch.Tensor]:
    """``model``'s weights under ``layout``'s keys (pytorchvideo: a pooling block between
    its first two residual stages, as in its i3d_r50, so the stage numbers skip one)."""
    fake = {}
    if layout == "pytorchvideo":
        fake = {f"blocks.{n}.res_blocks.0.x": None for n in (1, 3, 4, 5)}
        fake["blocks.6.proj.weight"] = None
    mapping = _key_map(layout, fake, model)
    ours = model.state_dict()
    return {theirs: ours[mine].clone() for theirs, mine in mapping.items() if mine in ours}


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(0)
    return create_backbone("i3d_r50", 400).eval()


@pytest.mark.parametrize("layout,wrap", [("pytorchvideo", None), ("pyslowfast", "model_state"),
                                         ("mmaction2", "state_dict"), ("attnas", None)])
def test_each_layout_loads_every_backbone_tensor(layout: str, wrap: str | None, source,
                                                 tmp_path: Path) -> None:
    state = _their_state(source, layout)
    assert detect_format(state) == layout
    path = tmp_path / "k400.pth"
    torch.save({wrap: state, "meta": {"epoch": 196}} if wrap else state, path)
    torch.manual_seed(1)
    net = create_backbone("i3d_r50", 400, block="nonlocal").eval()
    report = load_pretrained(net, path, head=True)
    assert report.format == layout and report.missing == [] and report.mismatched == []
    assert report.unexpected == []
    got = net.state_dict()
    for key, value in source.state_dict().items():
        torch.testing.assert_close(got[key], value, msg=key)
    # the inserted non-local blocks are identities: the network computes what the
    # pretrained one does
    clip = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net(clip), source(clip), rtol=1e-4, atol=1e-4)


def test_the_head_is_left_out_by_default_and_mismatches_are_reported(source) -> None:
    state = _their_state(source, "pyslowfast")
    state["s1.pathway0_stem.conv.weight"] = torch.zeros(64, 3, 1, 7, 7)  # another kernel
    net = create_backbone("i3d_r50", 10)
    report = load_pretrained(net, state)
    assert report.mismatched and "s1.pathway0_stem.conv.weight (64, 3, 1, 7, 7)" in \
        report.mismatched[0]
    assert report.missing == [] and report.unexpected == []  # head: not wanted, not unused
    assert "tensors loaded" in report.summary() and "1 shape mismatch" in report.summary()


def test_bad_pretrained_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from supernet.app.cli import main as attnas

    bad = tmp_path / "other.pth"
    torch.save({"encoder.layer.0.weight": torch.zeros(3)}, bad)
    with pytest.raises(ValueError, match="unknown checkpoint layout"):
        load_pretrained(create_backbone("proxy", 2), bad)
    with pytest.raises(ValueError, match="does not exist, expected a checkpoint file"):
        load_pretrained(create_backbone("proxy", 2), tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="unknown pretrained format"):
        load_pretrained(create_backbone("proxy", 2), bad, fmt="timm")
    from videos import write_pattern_video

    for c in ("a", "b"):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(3):
            write_pattern_video(tmp_path / "data" / c / f"{i}.mp4", 4, width=16, height=16)
    capsys.readouterr()
    code = attnas(["retrain", "fit", "--model.backbone=proxy", f"--model.pretrained={bad}",
                   f"--data.root={tmp_path / 'data'}", "--trainer.max_epochs=1",
                   f"--trainer.default_root_dir={tmp_path / 'runs'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "unknown checkpoint layout" in err
    assert not (tmp_path / "runs").exists()
