"""Where a :class:`~datamodules.datamodule.VideoDataModule`'s videos come from: the
records of every split, found without decoding, from a released annotation format
(:mod:`datamodules.formats`), ``train.txt`` / ``val.txt`` / ``test.txt`` list files, a
``train/`` + ``val/`` class-folder tree or a single class-folder tree split by class.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from .datasets import (
    BrokenVideoWarning,
    VideoRecord,
    classes_file,
    classes_from_lists,
    label_records,
    read_video_list,
    scan_class_folders,
    split_by_class,
)
from .formats import FormatError, detect_format, read_format
from .labels import warn_split_overlaps
from .paths import need_file, what_is

__all__ = ["VideoSources"]

_LIST_NAMES = {"train": "train.txt", "val": "val.txt", "test": "test.txt"}


class VideoSources:
    """The split records of a datamodule (a mixin of
    :class:`~datamodules.datamodule.VideoDataModule`, whose settings it reads: ``root``,
    the ``*_list`` files, ``path_prefix``, ``format``, ``split``, ``seed``, the fractions
    and ``synthetic``). Fills ``_classes`` (if not given), ``_sources`` and, for a
    released format, ``format_data``."""

    def _list_path(self, given: str | None, split: str) -> Path | None:
        root = Path(self.root)
        if given:
            p = Path(given)
            if not p.is_absolute() and not p.exists() and (root / p).exists():
                p = root / p
            if not p.is_file():
                need_file(given, f"{split} list file")
            return p
        p = root / _LIST_NAMES[split]
        return p if p.is_file() else None

    def _resolve_sources(self) -> dict[str, list[VideoRecord]]:
        """Find the videos of every split; raises ``FileNotFoundError`` / ``ValueError``
        naming the missing root / list file / unknown label."""
        if self._sources is not None:
            return self._sources
        root = Path(self.root)
        explicit = any((self.train_list, self.val_list, self.test_list))
        if not explicit and not root.is_dir():
            hint = " (set synthetic: true to generate it)" if not self.synthetic else ""
            raise FileNotFoundError(f"dataset root {root} {what_is(root)}, expected a "
                                    f"directory{hint if not root.exists() else ''}")
        sources: dict[str, list[VideoRecord]] = {}
        fmt = self.format if self.format != "auto" else \
            (None if explicit else detect_format(root))
        if fmt is not None:
            sources.update(self._read_format(fmt))
        elif explicit or (root / "train.txt").is_file():
            lists = {s: self._list_path(getattr(self, f"{s}_list"), s) for s in _LIST_NAMES}
            if lists["train"] is None:
                raise FileNotFoundError(f"no training list: {root / 'train.txt'} does not "
                                        "exist and train_list is not set")
            entries = {s: read_video_list(p, self.path_prefix) for s, p in lists.items() if p}
            if self._classes is None:
                self._classes = classes_file(self.root)
            if self._classes is None:
                self._classes = classes_from_lists([entries[s] for s in entries],
                                                   str(lists["train"]))
            for s, e in entries.items():
                sources[s] = label_records(e, self._classes, str(lists[s]))
            if self.predict_list:
                p = self._list_path(self.predict_list, "test")
                sources["predict"] = label_records(read_video_list(p, self.path_prefix),
                                                   self._classes, str(p))
        elif (root / "train").is_dir() and (root / "val").is_dir():
            train, names = scan_class_folders(root / "train")
            if self._classes is None:
                self._classes = names
            sources["train"] = self._relabel(train, names, root / "train")
            for s in ("val", "test"):
                if (root / s).is_dir():
                    recs, found = scan_class_folders(root / s)
                    sources[s] = self._relabel(recs, found, root / s)
        else:
            recs, names = scan_class_folders(root)
            if self._classes is None:
                self._classes = names
            recs = self._relabel(recs, names, root)
            sources.update(split_by_class(recs, self.seed, self.val_fraction,
                                          self.test_fraction))
        if not sources.get("train"):
            raise ValueError(f"the training set under {root} is empty")
        warn_split_overlaps(sources, root)  # a video listed twice, or in train and val/test
        sources.setdefault("test", sources.get("val", []))
        self._sources = sources
        return sources

    def _read_format(self, fmt: str) -> dict[str, list[VideoRecord]]:
        """The splits of a released annotation format (:func:`~datamodules.formats.read_format`;
        listed videos with no file: one warning line, refused beyond ``max_fail_fraction``)."""
        lists = {"train": self.train_list, "val": self.val_list, "test": self.test_list}
        data = read_format(fmt, self.root, self.split, self.path_prefix, lists, self.seed,
                           self.val_fraction, self.max_fail_fraction)
        if self._classes is None:
            self._classes = data.classes
        elif list(self._classes) != data.classes:
            raise FormatError(f"{data.files[0]}: its {len(data.classes)} classes differ from "
                              f"--data.classes ({len(self._classes)} given)")
        for line in data.missing_lines():
            warnings.warn(line, BrokenVideoWarning, stacklevel=2)
        for note in data.notes:
            print(f"note: {note}", file=sys.stderr)
        self.format_data = data
        return dict(data.splits)

    def records(self) -> dict[str, list[VideoRecord]]:
        """The videos of every split (``train``, ``val``, ``test``, ...), found without
        decoding. Raises ``FileNotFoundError`` / ``ValueError`` for a bad root."""
        return dict(self._resolve_sources())

    def _relabel(self, recs: list[VideoRecord], found: list[str], where: Path
                 ) -> list[VideoRecord]:
        assert self._classes is not None
        index = {c: i for i, c in enumerate(self._classes)}
        unknown = [c for c in found if c not in index]
        if unknown:
            raise ValueError(f"{where}: class folder(s) {unknown} not among the classes "
                             f"{self._classes[:10]}")
        return [VideoRecord(r.path, index[found[r.label]]) for r in recs]
