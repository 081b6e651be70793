"""Faults of round 3, part 2: inputs (real CLI, real files, real checkpoints and videos).
Each is one line on stderr and exit 2 with the output folder left exactly as it was, or a
one-line warning where nothing is invented."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from videos import write_pattern_video

from datamodules import VideoDataModule
from datamodules.labels import LabelWarning
from datamodules.synth import ensure_synthetic
from supernet.app.cli import main as attnas

PROXY = '{"widths": [16, 32, 64], "depths": [1, 1, 1], "stem_width": 8}'


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic(tmp_path_factory.mktemp("synth") / "data", classes=2,
                            videos_per_class=12, frames=8, size=16, seed=3, workers=1)


def _fit(kind: str, root: Path | str, out: Path, *extra: str) -> list[str]:
    return [kind, "fit", f"--data.root={root}", "--data.num_frames=8", "--data.crop_size=16",
            "--data.batch_size=4", "--data.num_workers=0", f"--data.search={kind == 'search'}",
            f"--model.backbone_kwargs={PROXY}", "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1",
            "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={out}",
            f"--trainer.logger.init_args.save_dir={out}", *extra]


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() \
        else []


def _refused(capfd: pytest.CaptureFixture, code: int, *needles: str) -> str:
    """One line on stderr (file descriptor level: Lightning's log lines too), exit 2."""
    err = capfd.readouterr().err.strip()
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("attnas "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def trained(synth: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("trained")
    assert attnas(_fit("retrain", synth, out)) == 0
    assert attnas(_fit("search", synth, out, "--model.num_nodes=2")) == 0
    return {"retrain": out / "retrain" / "version_0" / "checkpoints" / "last.ckpt",
            "search": out / "search" / "version_0" / "checkpoints" / "last.ckpt"}


@pytest.mark.parametrize("kind,extra,needle", [
    ("retrain", "--model.lr=-1", "lr must be > 0, got -1.0"),
    ("retrain", "--model.momentum=1.5", "momentum must be in [0, 1)"),
    ("search", "--model.arch_lr=-0.1", "arch_lr must be > 0"),
    ("search", "--trainer.max_epochs=0", "--trainer.max_epochs 0 trains nothing"),
    ("retrain", "--trainer.limit_train_batches=0", "limit_train_batches 0 trains nothing"),
    ("retrain", "--data.root={missing}", "does not exist, expected a directory"),
    ("retrain", "--data.root={file}", "is a file, expected a directory"),
    ("retrain", "--ckpt_path={folder}", "is a directory, expected a file"),
])
def test_refusals_are_one_line_and_leave_the_output_folder_as_it_was(
        kind: str, extra: str, needle: str, synth: Path, tmp_path: Path,
        capfd: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("kept\n")
    (tmp_path / "a_file.txt").write_text("not a dataset\n")
    extra = extra.format(missing=tmp_path / "missing", file=tmp_path / "a_file.txt",
                         folder=tmp_path)
    before = _tree(out)
    capfd.readouterr()
    line = _refused(capfd, attnas(_fit(kind, synth, out / "runs", extra)), needle)
    assert "Seed set" not in line and "GPU available" not in line
    assert _tree(out) == before  # no run folder, no classes.json, no config.yaml


def test_a_pretrained_file_of_another_backbone_is_refused(
        synth: Path, trained: dict[str, Path], tmp_path: Path,
        capfd: pytest.CaptureFixture) -> None:
    # the tiny proxy's checkpoint into the default proxy: its BatchNorm counters all match,
    # its weights do not
    args = _fit("retrain", synth, tmp_path / "runs",
                f"--model.pretrained={trained['retrain']}")
    args.remove(f"--model.backbone_kwargs={PROXY}")
    capfd.readouterr()
    _refused(capfd, attnas(args), "0 of the backbone's", "weight tensors match",
             "BatchNorm counters not counted")
    assert not (tmp_path / "runs").exists()
    # another depth: a third of the weights match -- refused, naming how many
    from supernet.factory import create_backbone
    from supernet.pretrained import load_pretrained

    tiny = create_backbone("proxy", 2, widths=[16, 32, 64], depths=[1, 1, 1], stem_width=8)
    deep = create_backbone("proxy", 2, widths=[16, 32, 64], depths=[3, 3, 3], stem_width=8)
    with pytest.raises(ValueError, match=r"only 65 of the backbone's 155 weight tensors "
                                         r"match .* \(90 missing"):
        load_pretrained(deep, tiny.state_dict())


@pytest.mark.parametrize("argv,needle", [
    (["predict", "{ckpt}", "{video}", "--clips", "0"], "--clips must be >= 1, got 0"),
    (["predict", "{ckpt}", "{video}", "--crops", "0"], "--crops must be 1 or 3, got 0"),
    (["export", "{ckpt}", "-o", "{out}/m.pt", "--frames", "0"], "--frames must be >= 1"),
])
def test_zero_is_not_the_default(argv: list[str], needle: str, trained: dict[str, Path],
                                 tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    video = write_pattern_video(tmp_path / "v.mp4", 8, width=16, height=16)
    argv = [a.format(ckpt=trained["retrain"], video=video, out=tmp_path) for a in argv]
    capfd.readouterr()
    _refused(capfd, attnas(argv), needle)
    assert not (tmp_path / "m.pt").exists()


def test_export_and_derive_into_an_existing_folder(trained: dict[str, Path], tmp_path: Path,
                                                   capfd: pytest.CaptureFixture) -> None:
    folder = tmp_path / "into"
    folder.mkdir()
    assert attnas(["export", str(trained["retrain"]), "-o", str(folder)]) == 0
    assert (folder / "last.pt").stat().st_size > 0
    assert attnas(["derive", str(trained["search"]), "-o", str(folder), "--quiet"]) == 0
    assert (folder / "derived.json").is_file() and (folder / "derived.png").is_file()


# ------------------------------------------------------------------------------- labels
def _videos(root: Path, names: list[str]) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    return [write_pattern_video(root / n, 8, width=16, height=16) for n in names]


def _lists(root: Path, train: list[str], val: list[str]) -> Path:
    """``train.txt`` / ``val.txt`` of ``path label`` lines (videos v0.mp4 ... written)."""
    n = max(len(train), len(val))
    _videos(root, [f"v{i}.mp4" for i in range(n)])
    (root / "train.txt").write_text("".join(f"v{i}.mp4 {lab}\n" for i, lab in
                                            enumerate(train)))
    (root / "val.txt").write_text("".join(f"v{n - 1 - i}.mp4 {lab}\n" for i, lab in
                                          enumerate(val)))
    return root


def _classes(root: Path, **kw) -> list[str]:
    dm = VideoDataModule(root=str(root), num_frames=4, crop_size=16, probe=False, **kw)
    dm.setup("fit")
    return dm.classes


@pytest.mark.parametrize("train,val,needle", [
    (["0", "1", "0", "1"], ["0", "7"], "unknown label '7'"),  # out of range in val
    (["0", "1", "0", "cat", "1"], ["0"], "label 'cat' is not an integer"),
    (["jumping"] * 3 + ["running"] * 3 + ["jumpng"], ["running"], "class 'jumpng' occurs once"),
    (["a", "b", "a"], ["c"], "unknown label 'c'"),  # a class only in val
])
def test_labels_never_invent_a_class(train: list[str], val: list[str], needle: str,
                                     tmp_path: Path) -> None:
    root = _lists(tmp_path / "d", train, val)
    with pytest.raises(ValueError, match=needle.replace("(", r"\(")):
        _classes(root)


def test_an_invented_class_is_refused_by_the_cli(tmp_path: Path,
                                                 capfd: pytest.CaptureFixture) -> None:
    root = _lists(tmp_path / "d", ["0", "1"] * 4, ["0", "1", "3"])
    capfd.readouterr()
    _refused(capfd, attnas(_fit("retrain", root, tmp_path / "runs")), "val.txt:3",
             "unknown label '3'")
    assert not (tmp_path / "runs").exists()


def test_label_mistakes_that_invent_nothing_are_warned(tmp_path: Path) -> None:
    # a duplicated line and a training video also in val: warned, classes unchanged
    root = _lists(tmp_path / "d", ["a", "b", "a", "b"], ["a", "b"])
    with open(root / "train.txt", "a") as fh:
        fh.write("v0.mp4 a\n")
    (root / "val.txt").write_text("v0.mp4 a\nv3.mp4 b\n")
    with pytest.warns(LabelWarning) as got:
        assert _classes(root) == ["a", "b"]
    text = " ".join(str(w.message) for w in got)
    assert "listed more than once in the train set" in text
    assert "also in the val set" in text
    # an empty class folder is not a class, and says so
    tree = tmp_path / "tree"
    for c in ("cat", "dog"):
        _videos(tree / c, ["x.mp4", "y.mp4", "z.mp4"])
    (tree / "empty_class").mkdir()
    with pytest.warns(LabelWarning, match="empty_class hold no videos"):
        assert _classes(tree, val_fraction=0.34) == ["cat", "dog"]
    # integer labels with a gap: the class exists (indices are the user's) and is warned
    gap = _lists(tmp_path / "gap", ["0", "2", "0", "2"], ["0"])
    with pytest.warns(LabelWarning, match=r"class\(es\) \[1\] have no training video"):
        assert _classes(gap) == ["0", "1", "2"]
    clean = _lists(tmp_path / "clean", ["a", "b", "a", "b"], ["a", "b"])
    (clean / "val.txt").write_text("v5.mp4 a\n")
    _videos(clean, ["v5.mp4"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", LabelWarning)
        assert _classes(clean) == ["a", "b"]
