"""Released annotation formats (datamodules.formats) on miniature copies of each layout with
real clips / frame folders: records and classes, detection, frame-folder decoding, missing
Kinetics clips, bad input refused in one line before anything is written, and
``attnas data check``."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
from layouts import (
    EXPECTED,
    FRAMES,
    HMDB_CLASSES,
    KINETICS_CLASSES,
    MAKERS,
    SSV2_CLASSES,
    UCF_CLASSES,
    make_kinetics,
)
from videos import frame_index

from datamodules import BrokenVideoWarning, VideoDataModule
from datamodules.datasets import VideoRecord, split_by_class
from datamodules.decode import FrameFolderReader, open_video
from datamodules.formats import FORMATS, FormatError, detect_format, read_format
from datamodules.formats.ucf101 import UCF101
from supernet.app.cli import main as attnas
from supernet.app.data_cli import main as data_main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("layouts")
    return {name: make(base / name) for name, make in MAKERS.items()}


def _copy(roots: dict[str, Path], name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(roots[name], tmp_path / name))


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_every_reader_gives_the_right_records_and_classes(roots: dict[str, Path],
                                                          name: str) -> None:
    classes, n_fit, n_test = EXPECTED[name]
    assert detect_format(roots[name]) == name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BrokenVideoWarning)
        data = read_format(name, roots[name], val_fraction=0.25)
    assert data.classes == classes and data.format == name
    assert len(data.splits["train"]) + len(data.splits["val"]) == n_fit
    assert len(data.splits.get("test", data.splits["val"])) == n_test
    for recs in data.splits.values():
        for r in recs:
            assert Path(r.path).exists()
            # every layout names the class in the path or the annotations put it there
            if name == "ucf101":
                assert Path(r.path).parent.name == classes[r.label]
            elif name == "hmdb51":
                assert Path(r.path).parent.name == classes[r.label]
            elif name == "rawframes":
                assert Path(r.path).name.split("_")[1] == classes[r.label]
    if name in ("ucf101", "hmdb51"):  # no validation split released: made from train
        assert any("made from train" in n for n in data.notes)
        train = {r.path for r in data.splits["train"]}
        assert not train & {r.path for r in data.splits["val"]}


def test_ucf101_quirks_crlf_capitals_and_case_of_file_names(roots: dict[str, Path]) -> None:
    lists = roots["ucf101"] / "ucfTrainTestlist"
    assert b"\r\n" in (lists / "trainlist01.txt").read_bytes()
    data = read_format("ucf101", roots["ucf101"], val_fraction=0.0)
    hsp = [r for r in data.splits["train"] if r.label == UCF_CLASSES.index("HandstandPushups")]
    assert len(hsp) == 4 and all("v_HandStandPushups_" in r.path for r in hsp)
    assert sorted(r.label for r in data.splits["test"]) == [0, 0, 1, 1, 2, 2]
    two = read_format("ucf101", roots["ucf101"], split=2, val_fraction=0.0)
    assert {r.path for r in two.splits["test"]} != {r.path for r in data.splits["test"]}


def test_kinetics_labels_with_spaces_and_quotes_and_both_folder_layouts(
        roots: dict[str, Path]) -> None:
    assert 'playing "tabla"' in KINETICS_CLASSES
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BrokenVideoWarning)
        data = read_format("kinetics", roots["kinetics"])
    assert data.classes == KINETICS_CLASSES
    for r in data.splits["val"]:  # per-class folders: the folder is the label
        assert Path(r.path).parent.name == KINETICS_CLASSES[r.label]
    assert all(Path(r.path).parent.name == "train" for r in data.splits["train"])


def test_ssv2_templates_with_brackets_map_to_labels(roots: dict[str, Path]) -> None:
    data = read_format("ssv2", roots["ssv2"])
    assert data.classes == SSV2_CLASSES
    entries = json.loads((roots["ssv2"] / "labels" / "train.json").read_text())
    by_id = {e["id"]: e["template"] for e in entries}
    for r in data.splits["train"]:
        template = by_id[Path(r.path).stem]
        assert "[" in template and SSV2_CLASSES[r.label] == template.replace("[", "").replace(
            "]", "")


def test_frame_folders_are_sampled_like_videos(roots: dict[str, Path]) -> None:
    folder = next((roots["rawframes"] / "rawframes").iterdir())
    assert any(f.name.startswith("flow_x") for f in folder.iterdir())
    with open_video(folder) as reader:
        assert isinstance(reader, FrameFolderReader) and reader.num_frames == FRAMES
        frames = reader.get_frames([0, 3, 7, 7, 2])
    assert frames.shape == (5, 24, 32, 3)
    assert [frame_index(f, FRAMES) for f in frames] == [0, 3, 7, 7, 2]
    dm = VideoDataModule(root=str(roots["rawframes"]), num_frames=4, sampling_rate=2,
                         crop_size=16, batch_size=2, num_workers=0)
    dm.setup("fit")
    assert dm.classes == ["jump", "run", "walk"]
    batch = next(iter(dm.val_dataloader()))
    assert batch["video"].shape == (2, 3, 4, 16, 16)


def test_a_missing_kinetics_clip_is_counted_not_fatal(roots: dict[str, Path],
                                                      tmp_path: Path) -> None:
    dm = VideoDataModule(root=str(roots["kinetics"]), num_frames=8, crop_size=16,
                         batch_size=2, num_workers=0)
    with pytest.warns(BrokenVideoWarning, match=r"1 of 12 train videos listed in .*train\.csv "
                                                r"have no file: tr011-_Xy3_000030_000040"):
        assert dm.classes == KINETICS_CLASSES
    dm.setup("fit")
    assert len(dm.datasets["train"].records) == 11
    many = make_kinetics(tmp_path / "k", missing=3)  # 3 of 12 > max_fail_fraction 0.1
    with pytest.raises(FormatError, match=r"3 of 12 train videos .* max_fail_fraction=0\.1"):
        VideoDataModule(root=str(many), num_frames=8, crop_size=16).classes  # noqa: B018


def _refused(argv: list[str], capsys: pytest.CaptureFixture, out: Path) -> str:
    code = attnas(["search", "fit", *argv, "--data.num_frames=8", "--data.crop_size=16",
                   "--data.num_workers=0", f"--trainer.default_root_dir={out}",
                   f"--trainer.logger.init_args.save_dir={out}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert not out.exists()  # nothing written
    return err[0]


def test_bad_input_is_one_line_exit_2_before_anything_is_written(
        roots: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "runs"
    ucf = _copy(roots, "ucf101", tmp_path)
    # a split number that does not exist
    assert "trainlist03.txt does not exist" in _refused(
        [f"--data.root={ucf}", "--data.split=3"], capsys, out)
    assert "--data.split 4 does not exist; UCF101 has splits 1, 2, 3" in _refused(
        [f"--data.root={ucf}", "--data.split=4"], capsys, out)
    # a root with none of the expected files
    line = _refused([f"--data.root={ucf}", "--data.format=ssv2"], capsys, out)
    assert "no labels.json found; expected Something-Something v2's" in line
    # an annotation file of another format
    kin = _copy(roots, "kinetics", tmp_path)
    shutil.copy(kin / "annotations" / "train.csv", ucf / "ucfTrainTestlist" / "classInd.txt")
    line = _refused([f"--data.root={ucf}"], capsys, out)
    assert "classInd.txt:1: expected '<index> <ClassName>'" in line
    (kin / "annotations" / "train.csv").write_text("path,label\na.mp4,x\n")
    line = _refused([f"--data.root={kin}", "--data.format=kinetics"], capsys, out)
    assert "train.csv: expected a Kinetics CSV header" in line


def test_labels_outside_the_class_list_are_refused(roots: dict[str, Path],
                                                   tmp_path: Path) -> None:
    ucf = _copy(roots, "ucf101", tmp_path)
    f = ucf / "ucfTrainTestlist" / "trainlist01.txt"
    f.write_bytes(f.read_bytes() + b"Basketball/v_Basketball_g01_c01.avi 9\r\n")
    with pytest.raises(FormatError, match=r"trainlist01\.txt:13: class index '9' is not in "
                                          r"classInd\.txt \(1\.\.3\)"):
        read_format("ucf101", ucf)
    ucf2 = Path(shutil.copytree(roots["ucf101"], tmp_path / "ucf2"))
    (ucf2 / "ucfTrainTestlist" / "testlist01.txt").write_bytes(
        b"Surfing/v_Surfing_g01_c01.avi\r\n")
    with pytest.raises(FormatError, match=r"testlist01\.txt:1: class 'Surfing' is not in "
                                          r"classInd\.txt"):
        read_format("ucf101", ucf2)
    kin = _copy(roots, "kinetics", tmp_path)
    val = kin / "annotations" / "validate.csv"
    val.write_text(val.read_text() + "surfing water,zz,0,10,validate,0\n")
    with pytest.raises(FormatError, match=r"validate\.csv:\d+: label 'surfing water' is not a "
                                          r"class of train\.csv"):
        read_format("kinetics", kin)
    ss = _copy(roots, "ssv2", tmp_path)
    tr = ss / "labels" / "train.json"
    tr.write_text(json.dumps([{"id": "1001", "template": "Spinning [something]"}]))
    with pytest.raises(FormatError, match=r"template 'Spinning something' is not a class of "
                                          r"labels\.json"):
        read_format("ssv2", ss)
    hm = _copy(roots, "hmdb51", tmp_path)
    (hm / "testTrainMulti_7030_splits" / "catch_test_split1.txt").write_text("a.avi 7\n")
    with pytest.raises(FormatError, match=r"catch_test_split1\.txt:1: expected '<video>\.avi "
                                          r"<0\|1\|2>'"):
        read_format("hmdb51", hm)
    raw = _copy(roots, "rawframes", tmp_path)
    val = raw / "mini_val_split_1_rawframes.txt"
    val.write_text(val.read_text() + "val_run_0 8 7\n")
    with pytest.raises(FormatError, match=r"mini_val_split_1_rawframes\.txt:7: unknown label "
                                          r"'7'"):
        read_format("rawframes", raw)
    assert sorted(FORMATS) == ["hmdb51", "kinetics", "rawframes", "ssv2", "ucf101"]
    assert HMDB_CLASSES == sorted(HMDB_CLASSES)


def test_data_check_reports_counts_missing_and_a_throughput(
        roots: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = _copy(roots, "kinetics", tmp_path)
    (root / ".attnas_probe.json").unlink(missing_ok=True)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    code = data_main(["check", str(root), "--num-frames", "8", "--crop-size",
                      "16", "--batch-size", "8", "--step-seconds", "0.5", "--clips", "4"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "format: kinetics, 3 classes" in out
    lines = {ln.split("│")[1].strip(): ln for ln in out.splitlines() if ln.count("│") > 3}
    assert "11" in lines["train"] and "6" in lines["val"]  # found videos per split
    assert "missing (train): 1: tr011-_Xy3_000030_000040" in out
    assert "playing \"tabla\"" in out
    assert "clip length (min / median / max): 8 / 8 / 8 frames" in out
    rate = float(out.split("decode throughput: ")[1].split(" clips/s")[0])
    assert rate > 0 and "at 3x8x16x16" in out
    assert "a GPU step of 0.5 s on 8 clips needs" in out
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # nothing written


def test_data_check_refuses_bad_input_in_one_line(roots: dict[str, Path],
                                                  capsys: pytest.CaptureFixture) -> None:
    assert data_main(["check", str(roots["hmdb51"]), "--split", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no *_test_split2.txt files" in err[0]


def test_a_validation_split_made_from_ucf101_train_takes_whole_groups() -> None:
    assert UCF101.group_of("/d/UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi") == \
        "applyeyemakeup_g08"
    assert UCF101.group_of("/d/x/v_HandStandPushups_g08_c03.avi") == "handstandpushups_g08"
    recs = [VideoRecord(f"/d/C{c}/v_C{c}_g{g:02d}_c{k:02d}.avi", c)
            for c in range(3) for g in range(1, 9) for k in range(1, 5)]
    parts = split_by_class(recs, seed=3, val_fraction=0.2, test_fraction=0.0,
                           group=UCF101.group_of)
    val = {UCF101.group_of(r.path) for r in parts["val"]}
    train = {UCF101.group_of(r.path) for r in parts["train"]}
    assert val and not val & train  # no group on both sides
    for c in range(3):  # each class: whole groups, at least its share (round(32 * 0.2) = 6)
        n = sum(r.label == c for r in parts["val"])
        assert n % 4 == 0 and 6 <= n < 32
    assert len(parts["val"]) + len(parts["train"]) == len(recs)
    plain = split_by_class(recs, seed=3, val_fraction=0.2, test_fraction=0.0)
    assert [len(plain[s]) for s in ("train", "val")] == [3 * 26, 3 * 6]
