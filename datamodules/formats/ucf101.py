"""UCF101 as released: ``ucfTrainTestlist/`` (``classInd.txt``, ``trainlist0N.txt``,
``testlist0N.txt``) and ``UCF-101/<Class>/v_<Class>_gXX_cYY.avi``.

``classInd.txt`` holds ``<1-based index> <ClassName>`` lines; ``trainlist0N.txt`` holds
``<Class>/<video>.avi <1-based index>`` and ``testlist0N.txt`` ``<Class>/<video>.avi`` (the
class is the folder). The files have CRLF line ends, and a few names differ in case between
the lists and the files (``HandstandPushups`` / ``v_HandStandPushups_...``), so videos are
found by their file name, case-insensitively. No validation split: it is made from train,
taking whole groups (``gXX``) so that no source video is in both.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..datasets import VideoRecord
from .base import FormatData, FormatError, FormatReader, index_files

__all__ = ["UCF101"]

_WHERE = ("", "ucfTrainTestlist", "annotations", "annotations/ucfTrainTestlist")


def read_class_index(path: Path) -> list[str]:
    """Class names in index order from a ``classInd.txt`` (``1 ApplyEyeMakeup`` lines,
    1-based, any line ends). Raises :class:`FormatError` naming file and line."""
    names: dict[int, str] = {}
    for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        s = line.strip()
        if not s:
            continue
        parts = s.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise FormatError(f"{path}:{lineno}: expected '<index> <ClassName>' (UCF101 "
                              f"classInd.txt), got {s[:60]!r}")
        names[int(parts[0])] = parts[1]
    if sorted(names) != list(range(1, len(names) + 1)):
        raise FormatError(f"{path}: expected class indices 1..{len(names)} (UCF101 "
                          f"classInd.txt), got {sorted(names)[:5]} ...")
    return [names[i] for i in range(1, len(names) + 1)]


class UCF101(FormatReader):
    """UCF101: ``classInd.txt`` + ``trainlist0N.txt`` / ``testlist0N.txt``, split N in 1-3."""

    name = "ucf101"
    title = "UCF101"
    split_numbers = (1, 2, 3)

    @staticmethod
    def group_of(path: str) -> str:
        """``.../v_<Class>_gXX_cYY.avi`` -> ``<class>_gXX``: the clips of group XX are cut
        from the same few source videos, so a validation split made from train takes whole
        groups (as the official splits do) or its accuracy is inflated."""
        m = re.search(r"v_([^/\\]+?)_g(\d+)_c\d+", Path(path).name, re.IGNORECASE)
        return f"{m.group(1).lower()}_g{m.group(2)}" if m else path

    @classmethod
    def detect(cls, root: Path) -> bool:  # noqa: D102
        return any((root / w / "classInd.txt").is_file() for w in _WHERE)

    def read(self) -> FormatData:  # noqa: D102
        ind = self.find(["classInd.txt"], _WHERE)
        if ind is None:
            raise self.missing_files("classInd.txt")
        classes = read_class_index(ind)
        by_name = {c.lower(): i for i, c in enumerate(classes)}
        videos = index_files(self.video_root())
        data = FormatData(classes, {}, files=[str(ind)])
        for split, stem in (("train", "trainlist"), ("test", "testlist")):
            f = ind.parent / f"{stem}{self.split:02d}.txt"
            if not f.is_file():
                raise FormatError(f"{f} does not exist: expected UCF101 split {self.split}'s "
                                  f"{stem}{self.split:02d}.txt next to {ind.name}")
            data.files.append(str(f))
            recs, missing = [], []
            for lineno, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
                s = line.strip()
                if not s:
                    continue
                parts = s.split()
                if len(parts) > 2 or "/" not in parts[0]:
                    raise FormatError(f"{f}:{lineno}: expected '<Class>/<video>.avi"
                                      f"{' <index>' if split == 'train' else ''}' (UCF101 "
                                      f"{stem}), got {s[:60]!r}")
                folder, file = parts[0].rsplit("/", 1)
                if len(parts) == 2:
                    if not parts[1].isdigit() or not 1 <= int(parts[1]) <= len(classes):
                        raise FormatError(f"{f}:{lineno}: class index {parts[1]!r} is not in "
                                          f"{ind.name} (1..{len(classes)})")
                    label = int(parts[1]) - 1
                elif folder.lower() in by_name:
                    label = by_name[folder.lower()]
                else:
                    raise FormatError(f"{f}:{lineno}: class {folder!r} is not in {ind.name}")
                path = videos.get(file.lower())
                if path is None:
                    missing.append(parts[0])
                else:
                    recs.append(VideoRecord(path, label))
            data.splits[split] = recs
            data.missing[split] = missing
            data.listed[split] = len(recs) + len(missing)
        return data
