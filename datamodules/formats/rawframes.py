"""Frame folders (the "rawframes" layout of mmaction2 and TSN pipelines): one folder of
JPEG/PNG frames per video and list files of ``<folder> <total_frames> <label>`` lines.

List files: ``--data.train_list`` / ``val_list`` / ``test_list`` when given, else in the root
``*train*rawframes*.txt`` / ``*val*rawframes*.txt`` / ``*test*rawframes*.txt`` (mmaction2's
``ucf101_train_split_1_rawframes.txt``), else ``train.txt`` / ``val.txt`` / ``test.txt``
whose lines have those three fields. Folders are relative to ``--data.path_prefix``, else
to the root, else to ``root/rawframes``. Labels are integers (classes ``"0" .. "K-1"``, or
the names in ``root/classes.json``) or class names (classes: the sorted names of the
training list). Frames are read by :class:`~datamodules.decode.FrameFolderReader` and
sampled into clips exactly as video frames are.
"""

from __future__ import annotations

from pathlib import Path

from ..datasets import classes_file, classes_from_lists, label_records
from .base import FormatData, FormatError, FormatReader

__all__ = ["RawFrames"]

_SPLITS = ("train", "val", "test")


def _looks_like_rawframes(f: Path) -> bool:
    """The first entry of ``f`` is ``<folder> <int> <label>``."""
    try:
        with f.open(errors="replace") as fh:
            for line in fh:
                parts = line.split()
                if parts and not parts[0].startswith("#"):
                    return len(parts) == 3 and parts[1].isdigit() and "." not in \
                        Path(parts[0]).name
    except OSError:
        return False
    return False


def _lists(root: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    if not root.is_dir():
        return out
    for f in sorted(root.glob("*rawframes*.txt")):
        for split in _SPLITS:
            if split in f.stem.lower() and split not in out:
                out[split] = f
    for split in _SPLITS:
        f = root / f"{split}.txt"
        if split not in out and f.is_file() and _looks_like_rawframes(f):
            out[split] = f
    return out


class RawFrames(FormatReader):
    """Frame folders with ``<folder> <total_frames> <label>`` lists."""

    name = "rawframes"
    title = "frame folders (rawframes)"

    @classmethod
    def detect(cls, root: Path) -> bool:  # noqa: D102
        return "train" in _lists(root)

    def _read_list(self, f: Path) -> list[tuple[str, str, int]]:
        base = self.video_root()
        out = []
        for lineno, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            parts = s.split()
            if len(parts) != 3 or not parts[1].isdigit():
                raise FormatError(f"{f}:{lineno}: expected '<folder> <total_frames> <label>' "
                                  f"(a rawframes list), got {s[:60]!r}")
            p = Path(parts[0])
            if not p.is_absolute():
                p = base / p
                if not p.is_dir() and not self.path_prefix and (base / "rawframes").is_dir():
                    p = base / "rawframes" / parts[0]
            out.append((str(p), parts[2], lineno))
        return out

    def read(self) -> FormatData:  # noqa: D102
        found = _lists(self.root)
        lists: dict[str, Path] = {}
        for split in _SPLITS:
            given = self.lists.get(split)
            if given:
                p = Path(given)
                p = p if p.is_file() or p.is_absolute() else self.root / p
                if not p.is_file():
                    raise FormatError(f"{split} list file {given} does not exist")
                lists[split] = p
            elif split in found:
                lists[split] = found[split]
        if "train" not in lists:
            raise self.missing_files("training list (*train*rawframes*.txt or train.txt of "
                                     "'<folder> <total_frames> <label>' lines)")
        entries = {s: self._read_list(f) for s, f in lists.items()}
        try:
            classes = classes_file(self.root) or classes_from_lists(
                [entries["train"]], str(lists["train"]))
            recs_of = {s: label_records(e, classes, str(lists[s])) for s, e in entries.items()}
        except ValueError as err:
            raise FormatError(str(err)) from None
        data = FormatData(classes, {}, files=[str(f) for f in lists.values()])
        for split, recs in recs_of.items():
            present = [r for r in recs if Path(r.path).is_dir()]
            data.splits[split] = present
            data.missing[split] = [r.path for r in recs if not Path(r.path).is_dir()]
            data.listed[split] = len(recs)
        return data
