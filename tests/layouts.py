"""Miniature copies of released dataset layouts for the data tests: the real annotation file
formats with their quirks, and real encoded clips (PyAV; one clip per codec is encoded, then
copied) or frame folders of JPEG images.

Every ``make_*`` writes under ``root`` and returns ``root``; the expected classes and counts
are the module constants below.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
from videos import pattern_frame, write_pattern_video

FRAMES, W, H = 8, 32, 24

UCF_CLASSES = ["ApplyEyeMakeup", "HandstandPushups", "Basketball"]
HMDB_CLASSES = ["brush_hair", "cartwheel", "catch"]  # sorted, as the reader gives them
KINETICS_CLASSES = sorted(["passing American football (in game)", "massaging person's head",
                           'playing "tabla"'])
SSV2_CLASSES = ["Putting something into something", "Holding something next to something",
                "Pretending to open something without actually opening it"]
SSV2_TEMPLATES = ["Putting [something] into [something]",
                  "Holding [something] next to [something]",
                  "Pretending to open [something] without actually opening it"]
RAW_CLASSES = ["jump", "run", "walk"]

_CLIPS: dict[str, bytes] = {}


def clip(path: Path, kind: str = "h264-mp4", frames: int = FRAMES) -> Path:
    """A real encoded clip of ``frames`` pattern frames at ``path`` (encoded once per kind
    and length, then copied)."""
    key = f"{kind}-{frames}"
    if key not in _CLIPS:
        tmp = path.with_name(".tmp" + path.suffix)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        write_pattern_video(tmp, frames, kind, width=W, height=H)
        _CLIPS[key] = tmp.read_bytes()
        tmp.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_CLIPS[key])
    return path


def make_ucf101(root: Path, per_class: tuple[int, int] = (4, 2)) -> Path:
    """``ucfTrainTestlist/{classInd,trainlist01,testlist01,trainlist02,testlist02}.txt`` with
    CRLF line ends and ``UCF-101/<Class>/v_<Class>_gXX_cYY.avi`` (the release's case quirk:
    ``HandstandPushups/v_HandStandPushups_...``). Split 1: ``per_class`` = (train, test)."""
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_bytes(
        "".join(f"{i} {c}\r\n" for i, c in enumerate(UCF_CLASSES, 1)).encode())
    n_train, n_test = per_class
    for split in (1, 2):
        train, test = [], []
        for i, c in enumerate(UCF_CLASSES, 1):
            stem = "HandStandPushups" if c == "HandstandPushups" else c
            for g in range(1, n_train + n_test + 1):
                rel = f"{c}/v_{stem}_g{g:02d}_c01.avi"
                if split == 1:
                    clip(root / "UCF-101" / rel, "mpeg4-avi")
                is_test = (g <= n_test) if split == 1 else (g > n_train)
                (test if is_test else train).append(rel if is_test else f"{rel} {i}")
        (lists / f"trainlist{split:02d}.txt").write_bytes("\r\n".join(train).encode() + b"\r\n")
        (lists / f"testlist{split:02d}.txt").write_bytes("\r\n".join(test).encode() + b"\r\n")
    return root


def make_hmdb51(root: Path) -> Path:
    """``testTrainMulti_7030_splits/<class>_test_split1.txt`` (``name.avi 1 `` lines, the
    trailing space of the release) and ``hmdb51_org/<class>/<name>.avi``: per class 3 train,
    2 test, 1 unused."""
    splits = root / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True)
    for c in HMDB_CLASSES:
        lines = []
        for k, tag in enumerate((1, 1, 1, 2, 2, 0)):
            name = f"{c}_video_{k}_f_cm_np1_fr_med_{k}.avi"
            clip(root / "hmdb51_org" / c / name, "mpeg4-avi")
            lines.append(f"{name} {tag} ")
        (splits / f"{c}_test_split1.txt").write_text("\n".join(lines) + "\n")
    return root


def make_kinetics(root: Path, missing: int = 1) -> Path:
    """``annotations/{train,validate}.csv`` (``label,youtube_id,time_start,time_end,split,
    is_cc``; labels with spaces and quotes, CSV-quoted) and clips named
    ``<id>_<start:06d>_<end:06d>.mp4``: train clips in one per-split folder, val clips in
    per-class folders. 4 train and 2 val clips per class; the last ``missing`` train clips are
    listed but not downloaded."""
    ann = root / "annotations"
    ann.mkdir(parents=True)
    n_train = 4 * len(KINETICS_CLASSES)
    for split, folder, per_class in (("train", "train", 4), ("validate", "val", 2)):
        rows = ["label,youtube_id,time_start,time_end,split,is_cc"]
        k = 0
        for c in KINETICS_CLASSES:
            for j in range(per_class):
                yid = f"{split[:2]}{k:03d}-_Xy{j}"
                start = 10 * j
                quoted = '"' + c.replace('"', '""') + '"'
                rows.append(f"{quoted},{yid},{start},{start + 10},{split},0")
                name = f"{yid}_{start:06d}_{start + 10:06d}.mp4"
                k += 1
                if split == "train" and k > n_train - missing:
                    continue
                where = root / folder / name if split == "train" else root / folder / c / name
                clip(where, "h264-mp4")
        (ann / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root


def make_ssv2(root: Path) -> Path:
    """``labels/{labels,train,validation}.json`` (templates with ``[something]`` brackets)
    and ``20bn-something-something-v2/<id>.webm``: 4 train, 2 validation videos per class."""
    labels = root / "labels"
    labels.mkdir(parents=True)
    (labels / "labels.json").write_text(json.dumps({c: str(i) for i, c in
                                                    enumerate(SSV2_CLASSES)}))
    vid = 1000
    for name, per_class in (("train.json", 4), ("validation.json", 2)):
        entries = []
        for t in SSV2_TEMPLATES:
            for _ in range(per_class):
                vid += 1
                entries.append({"id": str(vid), "label": t.replace("[something]", "a cup"),
                                "template": t, "placeholders": ["a cup", "a box"]})
                clip(root / "20bn-something-something-v2" / f"{vid}.webm", "vp9-webm")
        (labels / name).write_text(json.dumps(entries))
    (labels / "test.json").write_text(json.dumps([{"id": "99999"}]))
    return root


def make_rawframes(root: Path) -> Path:
    """``rawframes/<video>/img_00001.jpg ...`` (8 pattern frames; one folder also holds
    mmaction2's ``flow_x_*`` images), ``classes.json`` and
    ``mini_{train,val}_split_1_rawframes.txt`` of ``<folder> <total_frames> <label>`` lines:
    4 train, 2 val videos per class."""
    frames = [cv2.cvtColor(pattern_frame(i, W, H), cv2.COLOR_RGB2BGR) for i in range(FRAMES)]
    first: Path | None = None
    for split, per_class in (("train", 4), ("val", 2)):
        lines = []
        for label, c in enumerate(RAW_CLASSES):
            for j in range(per_class):
                folder = root / "rawframes" / f"{split}_{c}_{j}"
                if first is None:
                    folder.mkdir(parents=True)
                    for i, img in enumerate(frames, 1):
                        cv2.imwrite(str(folder / f"img_{i:05d}.jpg"), img)
                    cv2.imwrite(str(folder / "flow_x_00001.jpg"), frames[0][..., :1])
                    first = folder
                else:
                    shutil.copytree(first, folder)
                lines.append(f"{split}_{c}_{j} {FRAMES} {label}")
        (root / f"mini_{split}_split_1_rawframes.txt").write_text("\n".join(lines) + "\n")
    (root / "classes.json").write_text(json.dumps({"classes": RAW_CLASSES}))
    return root


MAKERS = {"ucf101": make_ucf101, "hmdb51": make_hmdb51, "kinetics": make_kinetics,
          "ssv2": make_ssv2, "rawframes": make_rawframes}
#: format -> (classes, train + val videos found, test videos found)
EXPECTED = {
    "ucf101": (UCF_CLASSES, 12, 6),
    "hmdb51": (HMDB_CLASSES, 9, 6),
    "kinetics": (KINETICS_CLASSES, 11 + 6, 6),
    "ssv2": (SSV2_CLASSES, 12 + 6, 6),
    "rawframes": (RAW_CLASSES, 12 + 6, 6),
}
