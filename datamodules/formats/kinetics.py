"""Kinetics-400/600/700 as released: ``train.csv`` / ``validate.csv`` / ``test.csv`` with
``label,youtube_id,time_start,time_end,split[,is_cc]`` and clips downloaded as
``<youtube_id>_<time_start:06d>_<time_end:06d>.<ext>``.

The CSVs may sit in the root or in ``annotations/`` and may be prefixed
(``kinetics-400_train.csv``); ``val.csv`` is accepted for ``validate.csv``. Clips may be
anywhere under the root (per-split folders ``train/``, per-class folders
``train/<label>/``, one flat folder): they are found by their name. Labels keep their
spaces and quotes (``"passing American football (in game)"``); classes are the sorted labels
of the training CSV. A clip that was never downloaded (a normal state of a Kinetics copy)
is counted and listed, not fatal, up to ``max_fail_fraction``. A test CSV without labels
(Kinetics-400's original) is skipped, and said so.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..datasets import VideoRecord
from .base import FormatData, FormatError, FormatReader, index_files

__all__ = ["Kinetics", "clip_name"]

HEADER = ("label", "youtube_id", "time_start", "time_end")
_SPLITS = {"train": ("train",), "val": ("validate", "val"), "test": ("test",)}


def clip_name(youtube_id: str, start: float, end: float) -> str:
    """The file stem a Kinetics clip is downloaded as: ``<id>_<start:06d>_<end:06d>``."""
    return f"{youtube_id}_{int(float(start)):06d}_{int(float(end)):06d}"


def _csvs(root: Path) -> dict[str, Path]:
    """``{split: csv}`` of the Kinetics CSVs in ``root`` or ``root/annotations``."""
    out: dict[str, Path] = {}
    for where in (root, root / "annotations"):
        if not where.is_dir():
            continue
        for f in sorted(where.glob("*.csv")):
            stem = f.stem.lower()
            for split, names in _SPLITS.items():
                if split not in out and any(stem == n or stem.endswith(("_" + n, "-" + n))
                                            for n in names):
                    out[split] = f
    return out


def _header(f: Path) -> list[str]:
    with f.open(newline="", errors="replace") as fh:
        return [h.strip().lower() for h in next(csv.reader(fh), [])]


class Kinetics(FormatReader):
    """Kinetics-400/600/700 CSVs (``label,youtube_id,time_start,time_end,split``)."""

    name = "kinetics"
    title = "Kinetics"

    @classmethod
    def detect(cls, root: Path) -> bool:  # noqa: D102
        f = _csvs(root).get("train")
        return f is not None and tuple(_header(f)[:2]) == HEADER[:2]

    def _rows(self, f: Path) -> tuple[list[tuple[str, str, int]], bool]:
        """``([(label, clip stem, line)], has labels)`` of one CSV."""
        head = _header(f)
        need = [h for h in HEADER if h != "label"]
        if any(h not in head for h in need):
            raise FormatError(f"{f}: expected a Kinetics CSV header "
                              f"(label,youtube_id,time_start,time_end,split), got "
                              f"{','.join(head)[:80]!r}")
        cols = {h: head.index(h) for h in HEADER if h in head}
        rows = []
        with f.open(newline="", errors="replace") as fh:
            reader = csv.reader(fh)
            next(reader)
            for lineno, row in enumerate(reader, 2):
                if not row or not any(c.strip() for c in row):
                    continue
                try:
                    stem = clip_name(row[cols["youtube_id"]].strip(),
                                     float(row[cols["time_start"]]),
                                     float(row[cols["time_end"]]))
                except (IndexError, ValueError):
                    raise FormatError(f"{f}:{lineno}: expected 'label,youtube_id,time_start,"
                                      f"time_end,...', got {','.join(row)[:80]!r}") from None
                label = row[cols["label"]].strip() if "label" in cols else ""
                rows.append((label, stem, lineno))
        return rows, "label" in cols

    def read(self) -> FormatData:  # noqa: D102
        csvs = _csvs(self.root)
        if "train" not in csvs:
            raise self.missing_files("train.csv (or <name>_train.csv, in the root or "
                                     "annotations/)")
        rows = {}
        data = FormatData([], {}, files=[])
        for split, f in csvs.items():
            r, labelled = self._rows(f)
            if not labelled:
                data.notes.append(f"{f.name} has no labels: no test split from it")
                continue
            rows[split] = (f, r)
            data.files.append(str(f))
        if "train" not in rows:
            raise FormatError(f"{csvs['train']}: no label column; expected a Kinetics CSV "
                              f"header (label,youtube_id,time_start,time_end,split)")
        classes = sorted({lab for lab, _, _ in rows["train"][1]})
        index = {c: i for i, c in enumerate(classes)}
        videos = index_files(self.video_root())
        data.classes = classes
        for split, (f, r) in rows.items():
            recs, missing = [], []
            for label, stem, lineno in r:
                if label not in index:
                    raise FormatError(f"{f}:{lineno}: label {label!r} is not a class of "
                                      f"{rows['train'][0].name} ({len(classes)} classes)")
                path = videos.get(stem.lower())
                if path is None:
                    missing.append(stem)
                else:
                    recs.append(VideoRecord(path, index[label]))
            data.splits[split] = recs
            data.missing[split] = missing
            data.listed[split] = len(r)
        return data
