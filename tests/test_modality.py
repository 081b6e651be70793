"""Input modalities: optical flow from real encoded videos (shape, direction, determinism,
its disk cache and stale settings), RGB difference, flow-aware flips, a flow model trained
through the real CLI, broken videos in a flow set, and bad modality input."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from datamodules import VideoDataModule
from datamodules.datasets import VideoClipDataset, VideoRecord
from datamodules.modality import FlowStore, compute_flow, rgb_difference
from datamodules.synth import ensure_synthetic
from datamodules.transforms import TrainTransform
from supernet.app.cli import main as attnas

pytestmark = pytest.mark.usefixtures("one_thread")


def _moving_square(path: Path, frames: int = 8, dx: int = 2, size: int = 48) -> Path:
    """A textured 12-px square moving ``dx`` px right per frame on a flat background."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=25)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        s.options = {"crf": "4", "preset": "ultrafast", "threads": "1"}
        for i in range(frames):
            img = np.full((size, size, 3), 90, np.uint8)
            x = 6 + dx * i
            img[18:30, x:x + 12] = texture
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _decode(path: Path) -> np.ndarray:
    from datamodules.decode import VideoReader

    with VideoReader(path) as r:
        return r.get_frames(np.arange(r.num_frames))


def test_flow_of_a_real_video_has_shape_direction_and_is_deterministic(tmp_path: Path) -> None:
    video = _moving_square(tmp_path / "sq.mp4")
    frames = _decode(video)
    flow = compute_flow(frames)
    assert flow.dtype == np.uint8 and flow.shape == (*frames.shape[:3], 2)
    u = (flow[:-1, 18:30, 12:24, 0].astype(np.float32) / 127.5 - 1) * 20.0  # pixels
    assert 1.0 < float(np.median(u)) < 3.0  # the square moves ~2 px right per frame
    v = (flow[:-1, 18:30, 12:24, 1].astype(np.float32) / 127.5 - 1) * 20.0
    assert abs(float(np.median(v))) < 0.5
    assert np.array_equal(flow, compute_flow(frames))
    assert np.array_equal(compute_flow(frames, "dis").shape, flow.shape)


def test_flow_store_caches_and_rebuilds_other_settings(tmp_path: Path) -> None:
    video = _moving_square(tmp_path / "sq.mp4")
    store = FlowStore(tmp_path / "flow")
    first = np.array(store.load(video, lambda: _decode(video)))
    cached = store.path_for(video)
    assert cached.is_file()

    def no_decode() -> np.ndarray:
        raise AssertionError("cached flow must not be recomputed")

    assert np.array_equal(FlowStore(tmp_path / "flow").load(video, no_decode), first)
    # the same folder with other settings recorded: never read, rebuilt
    (store.folder / "settings.json").write_text(json.dumps({"format": 0}))
    again = FlowStore(tmp_path / "flow")
    assert np.array_equal(again.load(video, lambda: _decode(video)), first)
    assert json.loads((again.folder / "settings.json").read_text()) == again.settings
    # another algorithm lives in another folder
    assert FlowStore(tmp_path / "flow", "dis").folder != store.folder
    with pytest.raises(ValueError, match="farneback, dis"):
        FlowStore(tmp_path / "flow", "tvl1")


def test_rgb_difference_and_flow_flip() -> None:
    a = np.zeros((3, 4, 4, 3), np.uint8)
    a[1] = 100
    a[2] = 40
    d = rgb_difference(a)
    assert d.shape == (2, 4, 4, 3)
    assert d[0, 0, 0, 0] == 128 + 50 and d[1, 0, 0, 0] == 128 - 30
    flow = np.full((2, 8, 8, 2), 128, np.uint8)
    flow[..., 0] = 200  # moving right
    tf = TrainTransform(8, flip_prob=1.0, mean=(0.0, 0.0), std=(1.0, 1.0), flow=True)
    x = tf(flow)
    assert x.shape == (2, 2, 8, 8)
    assert torch.allclose(x[0], torch.full_like(x[0], 55 / 255))  # now moving left
    assert torch.allclose(x[1], torch.full_like(x[1], 128 / 255))


def test_broken_video_in_a_flow_set_is_skipped_and_counted(tmp_path: Path) -> None:
    good = _moving_square(tmp_path / "good.mp4")
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 100)
    ds = VideoClipDataset([VideoRecord(str(tmp_path / "broken.mp4"), 0),
                           VideoRecord(str(good), 1)], num_frames=4, sampler="uniform",
                          max_fail_fraction=0.5, modality="flow",
                          flow_store=FlowStore(tmp_path / "flow"))
    with pytest.warns(UserWarning, match="broken"):
        item = ds[0]
    assert item["video"].shape == (2, 4, 48, 48) and int(item["label"]) == 1
    assert ds.failed_count() == 1


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic(tmp_path_factory.mktemp("synth") / "data", classes=2,
                            videos_per_class=6, frames=8, size=16, seed=4, workers=1)


def _retrain(root: Path, out: Path, sub: str, *extra: str) -> list[str]:
    return ["retrain", sub, f"--data.root={root}", "--data.num_frames=8",
            "--data.crop_size=16", "--data.batch_size=4", "--data.num_workers=0",
            "--model.backbone_kwargs={\"widths\": [16, 32, 64], \"depths\": [1, 1, 1], "
            "\"stem_width\": 8}", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={out}", f"--trainer.logger.init_args.save_dir={out}",
            *extra]


def test_a_flow_model_trains_and_its_checkpoint_refuses_rgb(synth: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture
                                                            ) -> None:
    out = tmp_path / "runs"
    assert attnas(_retrain(synth, out, "fit", "--data.modality=flow")) == 0
    assert list((synth / ".flow_cache").rglob("*.npy"))  # computed once, on disk
    ckpt = sorted(out.rglob("last.ckpt"))[-1]
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["state_dict"]["model.stem.conv.weight"].shape[1] == 2
    assert state["hyper_parameters"]["in_channels"] == 2
    capsys.readouterr()
    assert attnas(_retrain(synth, tmp_path / "t", "test", f"--ckpt_path={ckpt}")) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "trained on flow input" in lines[0], err
    assert attnas(_retrain(synth, tmp_path / "t", "test", f"--ckpt_path={ckpt}",
                           "--data.modality=flow")) == 0


def test_unknown_modality_is_one_line_and_exit_2(synth: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    assert attnas(_retrain(synth, tmp_path / "o", "fit", "--data.modality=depth")) == 2
    err = capsys.readouterr().err
    assert "'depth'" in err and "rgb, flow, rgbdiff" in err and "Traceback" not in err
    with pytest.raises(ValueError, match="rgb, flow, rgbdiff"):
        VideoDataModule(root=str(synth), modality="depth")


def test_late_fusion_of_an_rgb_and_a_flow_model(synth: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    """Each test run writes its per-video scores; the flow run fuses the RGB run's and
    logs the fused video top-1; a missing or mismatched scores file is one line, exit 2."""
    out = tmp_path / "runs"
    assert attnas(_retrain(synth, out / "rgb", "fit")) == 0
    assert attnas(_retrain(synth, out / "flow", "fit", "--data.modality=flow")) == 0
    rgb_ckpt = sorted((out / "rgb").rglob("last.ckpt"))[-1]
    flow_ckpt = sorted((out / "flow").rglob("last.ckpt"))[-1]
    assert attnas(_retrain(synth, out / "rgb_test", "test", f"--ckpt_path={rgb_ckpt}")) == 0
    rgb_scores = sorted((out / "rgb_test").rglob("test_scores.pt"))[-1]
    doc = torch.load(rgb_scores, weights_only=True)
    assert doc["modality"] == "rgb" and doc["scores"].shape == (len(doc["labels"]), 2)
    torch.testing.assert_close(doc["scores"].sum(-1), torch.ones(len(doc["labels"])))
    assert attnas(_retrain(synth, out / "fused", "test", f"--ckpt_path={flow_ckpt}",
                           "--data.modality=flow", f"--fuse_scores=[{rgb_scores}]")) == 0
    metrics = sorted((out / "fused").rglob("metrics.csv"))[-1].read_text()
    assert "test/fused_video_top1" in metrics and "test/video_top1" in metrics
    capsys.readouterr()
    assert attnas(_retrain(synth, out / "bad", "test", f"--ckpt_path={flow_ckpt}",
                           "--data.modality=flow",
                           f"--fuse_scores=[{tmp_path / 'nope.pt'}]")) == 2
    err = capsys.readouterr().err
    assert "no such file" in err and len([x for x in err.splitlines() if x.strip()]) == 1
    assert attnas(_retrain(synth, out / "bad2", "fit", f"--fuse_scores=[{rgb_scores}]")) == 2
    assert "option of `attnas retrain test`" in capsys.readouterr().err


def test_prepare_flow_computes_every_split_once(synth: Path, tmp_path: Path) -> None:
    flow = tmp_path / "flow"
    dm = VideoDataModule(root=str(synth), modality="flow", flow_dir=str(flow), num_frames=8,
                         crop_size=16)
    assert dm.prepare_flow(progress=False) == {"computed": 12, "cached": 0, "failed": 0}
    assert len(list(flow.glob("*/*.npy"))) == 12  # 2 classes x 6 videos, all splits
    again = VideoDataModule(root=str(synth), modality="flow", flow_dir=str(flow),
                            num_frames=8, crop_size=16)
    assert again.prepare_flow(progress=False) == {"computed": 0, "cached": 12, "failed": 0}
    rgb = VideoDataModule(root=str(synth), num_frames=8, crop_size=16)
    assert rgb.prepare_flow(progress=False) == {"computed": 0, "cached": 0, "failed": 0}
