"""Faults of round 3, part 1: a run's records (real Trainer runs, real processes, real
checkpoints). The final weights are always in ``last.ckpt``; a SIGKILLed retrain resumed
equals the uninterrupted one; a resumed run reads as one run."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from repo import REPO

from datamodules.synth import ensure_synthetic
from supernet.app.cli import main as attnas

PROXY = '{"widths": [16, 32, 64], "depths": [1, 1, 1], "stem_width": 8}'


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic(tmp_path_factory.mktemp("synth") / "data", classes=2,
                            videos_per_class=12, frames=8, size=16, seed=3, workers=1)


def _args(root: Path, out: Path, kind: str, epochs: int, *extra: str) -> list[str]:
    return [kind, "fit", f"--data.root={root}", "--data.num_frames=8", "--data.crop_size=16",
            "--data.batch_size=4", f"--data.search={kind == 'search'}",
            f"--model.backbone_kwargs={PROXY}", f"--trainer.max_epochs={epochs}",
            "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
            f"--trainer.default_root_dir={out}", f"--trainer.logger.init_args.save_dir={out}",
            *extra]


def _rows(run: Path) -> list[dict]:
    return list(csv.DictReader((run / "metrics.csv").open()))


def _one_row_per_epoch(run: Path) -> None:
    """Every row (epoch, step, the columns it fills) is logged once: no row of a repeated
    epoch."""
    kinds = Counter((r.get("epoch"), r.get("step"), frozenset(k for k, v in r.items() if v))
                    for r in _rows(run))
    assert kinds and max(kinds.values()) == 1, [k for k, n in kinds.items() if n > 1]


def test_last_ckpt_holds_the_final_weights_when_the_last_epochs_do_not_improve(
        synth: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    # lr 0 after the first epoch is not allowed; a tiny model on 2 classes does not move
    # val/top1 off 0.5 in 3 epochs of 3 batches: best.ckpt stays at epoch 0
    assert attnas(_args(synth, tmp_path, "retrain", 3, "--data.num_workers=0")) == 0
    ckpts = tmp_path / "retrain" / "version_0" / "checkpoints"
    last = torch.load(ckpts / "last.ckpt", weights_only=False)
    best = torch.load(ckpts / "best.ckpt", weights_only=False)
    assert last["epoch"] == 2 and last["global_step"] == 9
    if best["epoch"] < 2:  # the final weights are not the best ones, and last.ckpt has them
        assert any(not torch.equal(last["state_dict"][k], best["state_dict"][k])
                   for k in last["state_dict"] if last["state_dict"][k].is_floating_point())
    assert sorted(p.name for p in ckpts.iterdir()) == ["best.ckpt", "last.ckpt"]


def _retrain_process(root: Path, out: Path, *extra: str, new_session: bool = False
                     ) -> subprocess.Popen:
    """A real ``attnas retrain fit`` with the shipped loader (a persistent worker, the
    memory cache) and AdamW, 4 epochs."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "supernet.app.cli",
           *_args(root, out, "retrain", 4, "--data.num_workers=1",
                  "--data.persistent_workers=true", "--data.cache=memory",
                  "--model.optimizer=adamw", "--model.lr=0.05", *extra)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, cwd=REPO, start_new_session=new_session)


def _wait_for(proc: subprocess.Popen, path: Path, limit: float = 240) -> None:
    """Wait until ``path`` exists (the run's first checkpoint) or ``proc`` ends."""
    deadline = time.monotonic() + limit
    while not path.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)


def test_a_killed_retrain_resumed_equals_the_uninterrupted_one(synth: Path,
                                                              tmp_path: Path) -> None:
    full = _retrain_process(synth, tmp_path / "full")
    killed = _retrain_process(synth, tmp_path / "cut")
    last = tmp_path / "cut" / "retrain" / "version_0" / "checkpoints" / "last.ckpt"
    _wait_for(killed, last)
    killed.kill()  # SIGKILL: no hook runs
    killed.communicate()
    assert last.is_file(), "the retrain wrote no checkpoint"
    assert full.wait(timeout=300) == 0, full.stderr.read()[-2000:] if full.stderr else ""
    assert torch.load(last, weights_only=False)["epoch"] < 3  # killed before the end
    resumed = _retrain_process(synth, tmp_path / "cut", f"--ckpt_path={last}")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-2000:]
    runs = [tmp_path / name / "retrain" / "version_0" for name in ("full", "cut")]
    a, b = (torch.load(r / "checkpoints" / "last.ckpt", weights_only=False) for r in runs)
    assert a["epoch"] == b["epoch"] == 3
    for key in a["state_dict"]:
        torch.testing.assert_close(b["state_dict"][key], a["state_dict"][key], rtol=0, atol=0)
    # the records: the same epochs, the same values, one row each (the epoch-0 training
    # row may be lost when the kill lands between last.ckpt and the epoch's train row)
    rows = [{(r.get("epoch"), r.get("step"), r.get("val/top1"), r.get("train/top1"))
             for r in _rows(run)} for run in runs]
    assert rows[1] <= rows[0] and len(rows[0] - rows[1]) <= 1, rows[0] ^ rows[1]
    _one_row_per_epoch(runs[1])
    assert not list(runs[1].rglob("*-v1.ckpt"))


def test_a_search_resumed_after_a_kill_between_its_checkpoints_reads_as_one_run(
        synth: Path, tmp_path: Path) -> None:
    """A kill between ``epoch01.ckpt`` and ``last.ckpt`` leaves ``last.ckpt`` at epoch 0
    and the epoch-1 rows in ``metrics.csv``: the resume repeats epoch 1, and the run
    still has one row per epoch and no ``epoch01-v1.ckpt``."""
    torch.set_num_threads(1)
    search = ["--data.num_workers=0", "--model.num_nodes=2"]
    assert attnas(_args(synth, tmp_path, "search", 2, *search)) == 0
    run = tmp_path / "search" / "version_0"
    before = _rows(run)
    ckpts = run / "checkpoints"
    shutil.copy(ckpts / "epoch00.ckpt", ckpts / "last.ckpt")  # the state such a kill leaves
    assert attnas(_args(synth, tmp_path, "search", 2, *search,
                        f"--ckpt_path={ckpts / 'last.ckpt'}")) == 0
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch00.ckpt", "epoch01.ckpt",
                                                       "last.ckpt"]
    _one_row_per_epoch(run)
    assert len(_rows(run)) == len(before)
    assert torch.load(ckpts / "last.ckpt", weights_only=False)["epoch"] == 1


def _twostream_process(root: Path, out: Path) -> subprocess.Popen:
    """A real ``attnas search twostream --stage streams`` with a loader worker, 3 epochs; run
    again with the same arguments, it resumes from the stage's ``last.ckpt``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "supernet.app.cli", "search", "twostream", "-c",
           "configs/search/twostream.yaml", f"--out={out}", "--stage=streams",
           f"--data.root={root}", "--data.synthetic=false", "--data.num_frames=8",
           "--data.crop_size=16", "--data.batch_size=4", "--data.num_workers=1",
           "--data.cache=memory", "--trainer.max_epochs=3", "--trainer.limit_train_batches=3",
           "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
           "--model.select_val_batches=2"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, cwd=REPO)


def test_a_killed_twostream_stage_resumed_equals_the_uninterrupted_one(
        synth: Path, tmp_path: Path) -> None:
    full = _twostream_process(synth, tmp_path / "full")
    killed = _twostream_process(synth, tmp_path / "cut")
    last = tmp_path / "cut" / "streams" / "version_0" / "checkpoints" / "last.ckpt"
    _wait_for(killed, last)
    killed.kill()
    killed.communicate()
    assert last.is_file(), "the stage wrote no checkpoint"
    assert full.wait(timeout=300) == 0, full.stderr.read()[-2000:] if full.stderr else ""
    assert torch.load(last, weights_only=False)["epoch"] < 2  # killed before the end
    resumed = _twostream_process(synth, tmp_path / "cut")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-2000:]
    runs = [sorted((tmp_path / n / "streams").glob("version_*"))[-1] for n in ("full", "cut")]
    a, b = (torch.load(r / "checkpoints" / "last.ckpt", weights_only=False) for r in runs)
    assert a["epoch"] == b["epoch"] == 2
    for key in a["state_dict"]:
        torch.testing.assert_close(b["state_dict"][key], a["state_dict"][key], rtol=0, atol=0)
    assert (tmp_path / "full" / "streams.json").read_text().split('"provenance"')[0] == \
        (tmp_path / "cut" / "streams.json").read_text().split('"provenance"')[0]


def test_sigterm_stops_a_run_with_one_line_and_its_last_epoch_on_disk(synth: Path,
                                                                       tmp_path: Path) -> None:
    """A scheduler's SIGTERM reaches the whole process group (the loader workers too): the
    run ends with one line that names the checkpoint to resume from, exit 143, no
    traceback."""
    proc = _retrain_process(synth, tmp_path, "--trainer.max_epochs=50", new_session=True)
    last = tmp_path / "retrain" / "version_0" / "checkpoints" / "last.ckpt"
    _wait_for(proc, last)
    assert last.is_file(), "the retrain wrote no checkpoint"
    os.killpg(os.getpgid(proc.pid), signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "Traceback" not in err
    line = [ln for ln in err.splitlines() if ln.startswith("attnas retrain: error:")]
    assert len(line) == 1 and "stopped by SIGTERM" in line[0] and "--ckpt_path" in line[0]
    assert torch.load(last, weights_only=False)["epoch"] >= 0
