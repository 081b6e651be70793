"""Faults a user meets: each bad input or setting ends with one line and exit code 2,
before anything runs, and leaves no half-written artifact (real CLI, files, checkpoints)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from datamodules.synth import ensure_synthetic
from supernet.app.cli import main as attnas

PROXY = '{"widths": [16, 32, 64], "depths": [1, 1, 1], "stem_width": 8}'


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic(tmp_path_factory.mktemp("synth") / "data", classes=2,
                            videos_per_class=12, frames=8, size=16, seed=3, workers=1)


def _data(root: Path, search: bool, batch: int = 4) -> list[str]:
    return [f"--data.root={root}", "--data.num_frames=8", "--data.crop_size=16",
            f"--data.batch_size={batch}", "--data.num_workers=0", f"--data.search={search}"]


def _common(out: Path) -> list[str]:
    return [f"--model.backbone_kwargs={PROXY}", "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1",
            "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={out}",
            f"--trainer.logger.init_args.save_dir={out}"]


def _one_line_error(capsys: pytest.CaptureFixture, code: int, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("attnas "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def nonlocal_ckpt(synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("retrain")
    torch.set_num_threads(1)
    assert attnas(["retrain", "fit", *_data(synth, False), *_common(out),
                   "--model.block=nonlocal"]) == 0
    return next(out.rglob("last.ckpt"))


def test_test_without_a_checkpoint_is_refused(synth: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    args = ["retrain", "test", *_data(synth, False), *_common(tmp_path),
            "--trainer.limit_test_batches=1"]
    capsys.readouterr()
    _one_line_error(capsys, attnas(args), "give --ckpt_path", "--ckpt_path none")
    assert attnas([*args, "--ckpt_path", "none"]) == 0  # the untrained model, on purpose


def test_a_batch_larger_than_a_half_is_refused_before_training(
        synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    capsys.readouterr()
    code = attnas(["search", "fit", *_data(synth, True, batch=64), *_common(tmp_path)])
    _one_line_error(capsys, code, "weights half of the training set has", "batch_size 64")
    assert not list(tmp_path.rglob("*.ckpt"))


def test_a_synthetic_root_is_announced_and_a_foreign_folder_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from datamodules import VideoDataModule

    params = {"classes": 2, "videos_per_class": 3, "frames": 4, "size": 16, "seed": 0}
    dm = VideoDataModule(root=str(tmp_path / "typo"), synthetic=True, synthetic_params=params,
                         num_frames=4, crop_size=16)
    capsys.readouterr()
    dm.prepare_data()
    err = capsys.readouterr().err
    assert f"generating the synthetic benchmark into {tmp_path / 'typo'}: 6 videos" in err
    dm.prepare_data()  # complete now: not announced again
    assert "generating" not in capsys.readouterr().err
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my files\n")
    code = attnas(["search", "fit", f"--data.root={mine}", "--data.synthetic=true",
                   f"--data.synthetic_params={json.dumps(params)}", "--data.num_frames=4",
                   "--data.crop_size=16", *_common(tmp_path / "runs")])
    _one_line_error(capsys, code, "is not a synthetic benchmark folder")
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_a_checkpoint_is_tested_with_its_own_block(
        synth: Path, nonlocal_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["retrain", "test", *_data(synth, False), *_common(tmp_path),
            "--trainer.limit_test_batches=1", f"--ckpt_path={nonlocal_ckpt}"]
    capsys.readouterr()
    # the config's block (none) is replaced by the checkpoint's, with a note
    assert attnas(base) == 0
    assert "using the checkpoint's block 'nonlocal'" in capsys.readouterr().err
    # an explicit, conflicting block is refused in one line (not a state_dict traceback)
    _one_line_error(capsys, attnas([*base, "--model.block=a2"]), "trained with block "
                    "'nonlocal'", "--model.block says 'a2'")


@pytest.mark.parametrize("kind", ["search", "retrain"])
def test_an_unwritable_output_folder_is_one_line(kind: str, synth: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a regular file where a folder should be\n")
    capsys.readouterr()
    code = attnas([kind, "fit", *_data(synth, kind == "search"),
                   *_common(blocker / "runs")])
    _one_line_error(capsys, code, "cannot write to", str(blocker))


def test_derive_on_a_directory_or_into_an_unwritable_folder(
        synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "runs"
    assert attnas(["search", "fit", *_data(synth, True), *_common(out),
                   "--model.num_nodes=2"]) == 0
    run = next(out.rglob("version_0"))
    capsys.readouterr()
    _one_line_error(capsys, attnas(["derive", str(run)]), "is a directory",
                    str(run / "checkpoints" / "last.ckpt"))
    blocker = tmp_path / "file"
    blocker.write_text("x\n")
    code = attnas(["derive", str(run / "checkpoints" / "last.ckpt"), "-o",
                   str(blocker / "cell.json")])
    _one_line_error(capsys, code, "cannot write to")


def test_implausible_sizes_are_refused(synth: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    capsys.readouterr()
    code = attnas(["retrain", "fit", *_data(synth, False), *_common(tmp_path),
                   "--data.crop_size=100000"])
    _one_line_error(capsys, code, "crop_size 100000 is more than 1024")
    from derive.genotype import random_genotype, save_genotype

    cell = save_genotype(random_genotype(3, 0), tmp_path / "huge.json")
    doc = json.loads(Path(cell).read_text())
    doc["nodes"] = [{"op": "dot.spatial.softmax", "input": 0}] * 1000
    Path(cell).write_text(json.dumps(doc))
    code = attnas(["retrain", "fit", *_data(synth, False), *_common(tmp_path),
                   f"--model.block={cell}"])
    _one_line_error(capsys, code, "1000 nodes, more than the 16")
    code = attnas(["search", "fit", *_data(synth, True), *_common(tmp_path),
                   "--model.num_nodes=1000"])
    _one_line_error(capsys, code, "num_nodes must be an integer in 1..16")


def test_a_run_prints_no_stock_noise(synth: Path, tmp_path: Path,
                                     capfd: pytest.CaptureFixture) -> None:
    capfd.readouterr()
    assert attnas(["retrain", "fit", *_data(synth, False), *_common(tmp_path),
                   "--trainer.enable_progress_bar=true"]) == 0
    out = "".join(capfd.readouterr())
    assert "Epoch 0" in out  # the bar was drawn
    assert "GMACs per clip 3x8x16x16 (attention counted)" in " ".join(out.split())
    for noise in ("litlogger", "LeafSpec", "v_num", "FLOPs", "Skipping setting"):
        assert noise not in out, noise


def test_list_files_with_spaces_and_mov_files(tmp_path: Path) -> None:
    from datamodules.datasets import read_video_list, scan_class_folders

    (tmp_path / "list.txt").write_text("clips/a b.mp4 playing guitar\nclips/c.mov 3\n")
    got = [(Path(p).name, label) for p, label, _ in read_video_list(tmp_path / "list.txt")]
    assert got == [("a b.mp4", "playing guitar"), ("c.mov", "3")]
    from videos import write_pattern_video

    (tmp_path / "tree" / "cat").mkdir(parents=True)
    write_pattern_video(tmp_path / "tree" / "cat" / "x.mov", 4, "mpeg4-avi", width=16,
                        height=16)
    recs, classes = scan_class_folders(tmp_path / "tree")
    assert classes == ["cat"] and [Path(r.path).name for r in recs] == ["x.mov"]


def test_cost_counts_the_proxy_at_its_own_clip(capsys: pytest.CaptureFixture) -> None:
    assert attnas(["cost", "--backbone", "proxy", "--no-latency"]) == 0
    assert "input 1x3x32x24x24" in capsys.readouterr().out


def test_default_root_dir_moves_every_output(synth: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # ./runs would be here
    out = tmp_path / "elsewhere"
    assert attnas(["search", "fit", *_data(synth, True), f"--model.backbone_kwargs={PROXY}",
                   "--model.num_nodes=2", "--trainer.max_epochs=1",
                   "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1",
                   "--trainer.enable_progress_bar=false",
                   f"--trainer.default_root_dir={out}"]) == 0
    assert not (tmp_path / "runs").exists()
    run = out / "search" / "version_0"
    assert (run / "genotype.json").is_file() and (run / "checkpoints" / "last.ckpt").is_file()


def test_tensorboard_logger_is_an_option(synth: Path, tmp_path: Path) -> None:
    assert attnas(["search", "fit", *_data(synth, True), f"--model.backbone_kwargs={PROXY}",
                   "--model.num_nodes=2", "--trainer.max_epochs=1",
                   "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1",
                   "--trainer.enable_progress_bar=false",
                   "--trainer.logger=pytorch_lightning.loggers.TensorBoardLogger",
                   f"--trainer.logger.init_args.save_dir={tmp_path}"]) == 0
    run = tmp_path / "search" / "version_0"
    assert list(run.glob("events.out.tfevents.*"))
    assert (run / "genotype.json").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
