"""Retrain's runtime options: channels-last memory format and torch.compile give the same
network (same outputs, same checkpoint keys) through the real CLI, and bad values are
refused with one line and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from datamodules.synth import ensure_synthetic
from supernet.cli import main as attnas
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
