"""HMDB51 as released: ``testTrainMulti_7030_splits/<class>_test_split<N>.txt`` and the
videos ``<class>/<video>.avi``.

Each split file holds ``<video>.avi <tag>`` lines for one class: 1 = train, 2 = test,
0 = not used in that split. Classes are the sorted class names of the split files (51 in the
release). No validation split: it is made from train.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..datasets import VideoRecord
from .base import FormatData, FormatError, FormatReader, index_files

__all__ = ["HMDB51"]

_SPLIT_FILE = re.compile(r"^(?P<cls>.+)_test_split(?P<n>\d+)\.txt$")
_TAGS = {"1": "train", "2": "test"}


def _split_files(root: Path) -> dict[int, dict[str, Path]]:
    """``{split number: {class: file}}`` of the split files in ``root`` and its subfolders."""
    found: dict[int, dict[str, Path]] = {}
    for where in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        for f in sorted(where.glob("*_test_split*.txt")):
            m = _SPLIT_FILE.match(f.name)
            if m:
                found.setdefault(int(m["n"]), {}).setdefault(m["cls"], f)
    return found


class HMDB51(FormatReader):
    """HMDB51: per-class ``*_test_splitN.txt`` files (1 train, 2 test, 0 unused), N in 1-3."""

    name = "hmdb51"
    title = "HMDB51"
    split_numbers = (1, 2, 3)

    @classmethod
    def detect(cls, root: Path) -> bool:  # noqa: D102
        return bool(_split_files(root))

    def read(self) -> FormatData:  # noqa: D102
        files = _split_files(self.root)
        if not files:
            raise self.missing_files("<class>_test_split<N>.txt files")
        if self.split not in files:
            raise FormatError(f"{self.root}: no *_test_split{self.split}.txt files (HMDB51 "
                              f"splits here: {', '.join(map(str, sorted(files)))})")
        mine = files[self.split]
        classes = sorted(mine)
        videos = index_files(self.video_root())
        data = FormatData(classes, {"train": [], "test": []},
                          missing={"train": [], "test": []}, files=[str(f) for f in
                                                                    mine.values()])
        for label, cls in enumerate(classes):
            f = mine[cls]
            for lineno, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
                s = line.strip()
                if not s:
                    continue
                parts = s.split()
                if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                    raise FormatError(f"{f}:{lineno}: expected '<video>.avi <0|1|2>' (HMDB51 "
                                      f"split file), got {s[:60]!r}")
                split = _TAGS.get(parts[1])
                if split is None:
                    continue
                path = videos.get(parts[0].lower())
                if path is None:
                    data.missing[split].append(f"{cls}/{parts[0]}")
                else:
                    data.splits[split].append(VideoRecord(path, label))
        for split in data.splits:
            data.listed[split] = len(data.splits[split]) + len(data.missing[split])
        return data
