"""What every annotation-format reader shares: the result type, the error type and the base
class with its file-finding helpers.

A reader turns a dataset root *as released* (UCF101's ``ucfTrainTestlist``, Kinetics' CSVs,
...) into :class:`FormatData`: the class names in index order and the
:class:`~datamodules.datasets.VideoRecord` lists of the splits it has. It reads annotation
files and lists folders; it never decodes a video and never writes a file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from ..datasets import VIDEO_EXTENSIONS, VideoRecord

__all__ = ["FormatError", "FormatData", "FormatReader", "index_files"]


class FormatError(ValueError):
    """An annotation file is not what its format expects; the message is one line naming
    the file (and line) and what was expected."""


@dataclass
class FormatData:
    """A dataset read from its released annotation files.

    Attributes:
        classes: class names in index order.
        splits: ``{"train": [...], "val": [...], "test": [...]}``; a split the release
            does not have is absent.
        missing: per split, the names of listed videos with no file under the root.
        listed: per split, how many videos the annotation files list (found + missing).
        notes: one-line remarks for the user (a split made from another, files skipped).
        files: the annotation files that were read.
        format: the registry name of the reader.
    """

    classes: list[str]
    splits: dict[str, list[VideoRecord]]
    missing: dict[str, list[str]] = field(default_factory=dict)
    listed: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    format: str = ""

    def missing_line(self, split: str) -> str:
        """One line: how many of ``split``'s listed videos have no file, the first names."""
        names = self.missing.get(split, [])
        where = self.files[0] if self.files else "the annotation files"
        return (f"{len(names)} of {self.listed.get(split, len(names))} {split} videos listed "
                f"in {where} have no file: {', '.join(names[:5])}"
                + (" ..." if len(names) > 5 else ""))

    def missing_lines(self) -> list[str]:
        """:meth:`missing_line` of every split with missing videos."""
        return [self.missing_line(s) for s, names in self.missing.items() if names]


def index_files(root: Path, extensions: Sequence[str] = VIDEO_EXTENSIONS,
                folders: bool = False) -> dict[str, str]:
    """``{lower-case name: path}`` of every file under ``root`` whose suffix is one of
    ``extensions`` (with ``folders``, of every folder instead), walked once; names are keyed
    with and without their suffix. The first of two equal names wins (sorted walk)."""
    out: dict[str, str] = {}
    exts = tuple(e.lower() for e in extensions)
    for here, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        names = dirs if folders else [f for f in sorted(files) if f.lower().endswith(exts)]
        for name in names:
            path = os.path.join(here, name)
            low = name.lower()
            out.setdefault(low, path)
            if not folders:
                out.setdefault(os.path.splitext(low)[0], path)
    return out


class FormatReader:
    """Base of the annotation-format readers (one subclass per format, one file each,
    registered in :data:`datamodules.formats.FORMATS`).

    Args:
        root: the dataset root as released (annotation files and videos below it).
        split: the official split number, for formats that have several (UCF101, HMDB51).
        path_prefix: where the videos / frame folders are when not under ``root``.
        lists: explicit annotation files, ``{"train": path, "val": path, "test": path}``
            (frame-folder lists; other formats find theirs under ``root``).
    """

    #: registry name (``--data.format``)
    name: ClassVar[str] = ""
    #: how the docs and messages call it
    title: ClassVar[str] = ""
    #: the official split numbers (empty: the format has one split)
    split_numbers: ClassVar[tuple[int, ...]] = ()
    #: a video path -> its group (videos of one group are cut from one recording and must
    #: not be split between train and a validation split made from it); None: no groups
    group_of: ClassVar[Callable[[str], str] | None] = None

    def __init__(self, root: str | Path, split: int = 1, path_prefix: str = "",
                 lists: dict[str, str | None] | None = None) -> None:
        self.root = Path(root)
        self.split = int(split)
        self.path_prefix = path_prefix
        self.lists = {k: v for k, v in (lists or {}).items() if v}
        if self.split_numbers and self.split not in self.split_numbers:
            raise FormatError(f"{self.root}: --data.split {self.split} does not exist; "
                              f"{self.title} has splits "
                              f"{', '.join(map(str, self.split_numbers))}")

    @classmethod
    def detect(cls, root: Path) -> bool:
        """Whether ``root`` holds this format's annotation files (cheap: names only)."""
        raise NotImplementedError

    def read(self) -> FormatData:
        """Read the annotation files and find the videos. Raises :class:`FormatError`."""
        raise NotImplementedError

    # ----------------------------------------------------------------- helpers
    def video_root(self) -> Path:
        """Where videos are searched: ``path_prefix`` if given, else ``root``."""
        return Path(self.path_prefix) if self.path_prefix else self.root

    def find(self, names: Iterable[str], where: Sequence[str] = ("", "annotations")
             ) -> Path | None:
        """The first existing ``root/<where>/<name>`` (``where`` tried in order per name)."""
        for name in names:
            for sub in where:
                p = self.root / sub / name
                if p.is_file():
                    return p
        return None

    def missing_files(self, what: str) -> FormatError:
        """The error of a root without this format's files."""
        return FormatError(f"{self.root}: no {what} found; expected {self.title}'s "
                           f"annotation files (is --data.format {self.name} right?)")
