"""``attnas export`` and ``attnas predict`` on a retrained network (a derived cell with map
and dot-product ops, sinusoidal positions): TorchScript and ONNX files loaded back and run;
class probabilities of real encoded videos; bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.synth import ensure_synthetic
from supernet.app.cli import main as attnas
from supernet.genotype import Genotype, save_genotype

PROXY = '{"widths": [16, 32, 64], "depths": [1, 1, 1], "stem_width": 8}'


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("export")
    data = ensure_synthetic(base / "data", classes=2, videos_per_class=12, frames=8, size=16,
                            seed=3, workers=1)
    cell = save_genotype(Genotype(nodes=[("map.temporal.softmax", 0),
                                         ("dot.spatiotemporal.softmax", 1),
                                         ("dot.temporal.relu", 0)], position="sincos"),
                         base / "cell.json")
    torch.set_num_threads(1)
    assert attnas(["retrain", "fit", f"--data.root={data}", "--data.num_frames=8",
                   "--data.crop_size=16", "--data.batch_size=4", "--data.num_workers=0",
                   f"--model.backbone_kwargs={PROXY}", f"--model.block={cell}",
                   "--trainer.max_epochs=1", "--trainer.limit_train_batches=1",
                   "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
                   f"--trainer.default_root_dir={base / 'runs'}"]) == 0
    return next((base / "runs").rglob("last.ckpt")), base


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_round_trip(fmt: str, trained: tuple[Path, Path], tmp_path: Path,
                           capsys: pytest.CaptureFixture) -> None:
    from supernet.retrain import VideoClassifier

    ckpt, _ = trained
    out = tmp_path / ("net.pt" if fmt == "torchscript" else "net.onnx")
    assert attnas(["export", str(ckpt), "--format", fmt, "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out} ({fmt}, input 1x3x8x16x16)" in printed and "max |exported" in printed
    model = VideoClassifier.load_from_checkpoint(str(ckpt), map_location="cpu").model.eval()
    clip = torch.randn(1, 3, 8, 16, 16)
    with torch.no_grad():
        want = model(clip).numpy()
    if fmt == "torchscript":
        got = torch.jit.load(str(out))(clip).detach().numpy()
    else:
        import onnxruntime as ort

        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = session.run(None, {"video": np.concatenate([clip.numpy()] * 2)})[0][:1]  # batch 2
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left


def test_export_bad_input(trained: tuple[Path, Path], tmp_path: Path,
                          capsys: pytest.CaptureFixture) -> None:
    ckpt, base = trained
    cases = [
        ([str(ckpt), "--format", "tflite", "-o", str(tmp_path / "x")], "unknown format"),
        ([str(base / "missing.ckpt"), "-o", str(tmp_path / "x")], "does not exist"),
        ([str(base / "cell.json"), "-o", str(tmp_path / "x")], "not a readable"),
        ([str(ckpt), "-o", str(base / "cell.json" / "x.pt")], "cannot write to"),
    ]
    for argv, needle in cases:
        capsys.readouterr()
        assert attnas(["export", *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("attnas export: error:") and needle in err, (argv, err)
        assert len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_predict_prints_labels_and_skips_a_broken_video(trained: tuple[Path, Path],
                                                       tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    import json

    ckpt, base = trained
    videos = sorted((base / "data").rglob("*.mp4"))[:2]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 100)
    capsys.readouterr()
    code = attnas(["predict", str(ckpt), str(videos[0]), str(broken), str(videos[1]),
                   "--topk", "2", "--json"])
    out, err = capsys.readouterr()
    assert code == 1  # one video failed; the others were predicted
    assert err.count("\n") == 1 and f"skipped {broken}" in err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["video"] for r in rows] == [str(videos[0]), str(videos[1])]
    for r in rows:
        labels = [t["label"] for t in r["top"]]
        assert sorted(labels) == ["green_first", "red_first"]  # the run's class names
        assert abs(sum(t["p"] for t in r["top"]) - 1.0) < 1e-3
    pics = tmp_path / "attention"
    assert attnas(["predict", str(ckpt), str(videos[0]), "--clips", "2", "--crops", "3",
                   "--attention", str(pics)]) == 0
    assert capsys.readouterr().out.startswith(f"{videos[0].name}: ")
    stem = videos[0].stem + "_attention"
    assert sorted(p.name for p in pics.iterdir()) == [f"{stem}.gif", f"{stem}.png"]
    from PIL import Image

    with Image.open(pics / f"{stem}.gif") as gif:
        assert gif.n_frames == 8  # one per clip frame


def test_attention_maps_of_every_op_kind(tmp_path: Path) -> None:
    from supernet.app.attention_maps import attention_maps
    from supernet.factory import create_backbone

    torch.manual_seed(0)
    cell = save_genotype(Genotype(nodes=[("map.spatial.sigmoid", 0), ("dot.temporal.softmax", 1),
                                         ("dot.spatiotemporal.relu", 0),
                                         ("dot.spatial.identity", 2)]), tmp_path / "c.json")
    clip = torch.randn(1, 3, 8, 16, 16)
    proxy = {"widths": [16, 32, 64], "depths": [1, 1, 1], "stem_width": 8}
    for block, per_cell in ((str(cell), 4), ("nonlocal", 1)):
        net = create_backbone("proxy", 3, block=block, **proxy)
        maps = attention_maps(net, clip)
        assert len(maps) == 2 * per_cell  # the proxy inserts a block at 2 positions
        for name, m in maps.items():
            assert m.dim() == 3 and torch.isfinite(m).all(), name
            if "softmax" in name or "sigmoid" in name:  # attention received: a distribution
                assert float(m.min()) >= 0.0, name
        assert any("map.spatial.sigmoid" in k for k in maps) or block == "nonlocal"
