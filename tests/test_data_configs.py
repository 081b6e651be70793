"""Dry runs (``--trainer.fast_dev_run``) of a search on every released layout, and of the
shipped real-data configs (UCF101 split 1 and Kinetics-400; proxy search and I3D-R50
retrain; one device and DDP) on generated miniatures of their layouts, on CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from layouts import MAKERS, make_kinetics, make_ucf101
from repo import REPO

from supernet.app.cli import main as attnas

PROXY = '{"widths": [16, 32, 64], "depths": [1, 1, 1], "stem_width": 8}'
TINY = ["--data.num_frames=8", "--data.sampling_rate=1", "--data.num_workers=0",
        "--data.batch_size=2", "--data.eval_batch_size=2", "--data.val_fraction=0.25",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
CPU = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.precision=32-true",
       "--data.pin_memory=false", "--trainer.fast_dev_run=1"]


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("layouts")
    return {name: make(base / name) for name, make in MAKERS.items()}


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_search_dry_run_on_every_layout(roots: dict[str, Path], name: str,
                                        tmp_path: Path) -> None:
    torch.set_num_threads(1)
    code = attnas(["search", "fit", f"--data.root={roots[name]}", "--data.crop_size=16",
                   "--data.search=true", *TINY, f"--model.backbone_kwargs={PROXY}",
                   "--model.num_nodes=2", "--trainer.fast_dev_run=1",
                   f"--trainer.default_root_dir={tmp_path}"])
    assert code == 0
    assert (tmp_path / "genotype.json").is_file()


def _clip(crop: int) -> list[str]:
    return [f"--data.crop_size={crop}", f"--data.min_short_side={crop}",
            f"--data.max_short_side={crop}", f"--data.test_short_side={crop}",
            "--data.test_clips=1", "--data.test_crops=1"]


CONFIGS = {  # config -> (layout maker, CPU-sized overrides of the model)
    "configs/search/ucf101_proxy.yaml": (make_ucf101, [f"--model.backbone_kwargs={PROXY}",
                                                       "--model.num_nodes=2", *_clip(16)]),
    "configs/search/kinetics400_proxy.yaml": (make_kinetics, [
        f"--model.backbone_kwargs={PROXY}", "--model.num_nodes=2", *_clip(16)]),
    "configs/retrain/ucf101_i3d_r50.yaml": (make_ucf101, _clip(32)),
    "configs/retrain/kinetics400_i3d_r50.yaml": (make_kinetics, _clip(32)),
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_shipped_config_dry_run_on_a_miniature_of_its_layout(config: str, tmp_path: Path
                                                             ) -> None:
    torch.set_num_threads(1)
    make, model = CONFIGS[config]
    root = make(tmp_path / "data")
    kind = "search" if "/search/" in config else "retrain"
    code = attnas([kind, "fit", "-c", str(REPO / config), f"--data.root={root}", *TINY,
                   *CPU, *model, f"--trainer.default_root_dir={tmp_path / 'runs'}"])
    assert code == 0
    assert any((tmp_path / "runs").rglob("*.ckpt"))


def test_ddp_overlay_dry_run_two_cpu_processes(tmp_path: Path) -> None:
    """The UCF101 search config with ``configs/trainer/ddp.yaml``: DDP (gloo) on 2 CPU
    processes, each rank a shard of both halves."""
    root = make_ucf101(tmp_path / "data", per_class=(8, 2))
    args = ["search", "fit", "-c", "configs/search/ucf101_proxy.yaml", "-c",
            "configs/trainer/ddp.yaml", f"--data.root={root}", *TINY, *_clip(16),
            f"--model.backbone_kwargs={PROXY}", "--model.num_nodes=2",
            "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.sync_batchnorm=false",
            "--data.pin_memory=false", "--trainer.fast_dev_run=1",
            f"--trainer.default_root_dir={tmp_path / 'runs'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "supernet.app.cli", *args], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("DDP dry run hung (killed after 300 s)")
    assert proc.returncode == 0, stderr[-2000:]
    assert (tmp_path / "runs" / "genotype.json").is_file()
