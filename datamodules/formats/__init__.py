"""Annotation formats as datasets are released: one reader class per format, one file each,
found through one registry, :data:`FORMATS` (``--data.format`` name -> reader).

=============  ===================================================================
``ucf101``     ``classInd.txt``, ``trainlist0N.txt`` / ``testlist0N.txt``
``hmdb51``     ``<class>_test_splitN.txt`` (1 train, 2 test, 0 unused)
``kinetics``   ``train.csv`` / ``validate.csv`` (``kinetics400/600/700`` are aliases)
``ssv2``       ``labels.json`` + ``train.json`` / ``validation.json``, ``<id>.webm``
``rawframes``  frame folders + ``<folder> <total_frames> <label>`` lists
=============  ===================================================================

:func:`detect_format` names the format of a root when exactly one reader recognises it;
:func:`read_format` reads one and makes the validation split a release lacks from its
training split (seeded, stratified; the note says so). A new format is a
:class:`~datamodules.formats.base.FormatReader` subclass in its own file, added to
:data:`FORMATS` here.
"""

from __future__ import annotations

from pathlib import Path

from ..datasets import split_by_class
from .base import FormatData, FormatError, FormatReader
from .hmdb51 import HMDB51
from .kinetics import Kinetics
from .rawframes import RawFrames
from .ssv2 import SomethingSomethingV2
from .ucf101 import UCF101

__all__ = ["FORMATS", "FORMAT_NAMES", "FormatData", "FormatError", "FormatReader",
           "detect_format", "read_format"]

#: ``--data.format`` name -> reader
FORMATS: dict[str, type[FormatReader]] = {
    r.name: r for r in (UCF101, HMDB51, Kinetics, SomethingSomethingV2, RawFrames)}
_ALIASES = {"kinetics400": "kinetics", "kinetics600": "kinetics", "kinetics700": "kinetics",
            "something-something-v2": "ssv2", "frames": "rawframes"}
#: every accepted ``--data.format`` value (``auto``: detect, else the generic layouts)
FORMAT_NAMES = ("auto", *FORMATS, *_ALIASES)


def reader_of(name: str) -> type[FormatReader]:
    """The reader registered as ``name`` (or an alias). ``FormatError`` for another name."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in FORMATS:
        raise FormatError(f"unknown --data.format {name!r}; accepted: "
                          f"{', '.join(FORMAT_NAMES)}")
    return FORMATS[key]


def detect_format(root: str | Path) -> str | None:
    """The registered format whose files ``root`` holds; None when no reader recognises it
    (a generic layout: class folders or ``path label`` lists). ``FormatError`` when several
    do (the user must choose with ``--data.format``)."""
    root = Path(root)
    if not root.is_dir():
        return None
    hits = [name for name, reader in FORMATS.items() if reader.detect(root)]
    if len(hits) > 1:
        raise FormatError(f"{root} holds the annotation files of {' and '.join(hits)}; "
                          f"choose one with --data.format")
    return hits[0] if hits else None


def read_format(name: str, root: str | Path, split: int = 1, path_prefix: str = "",
                lists: dict[str, str | None] | None = None, seed: int = 0,
                val_fraction: float = 0.1, max_fail_fraction: float = 1.0) -> FormatData:
    """Read ``root`` in format ``name``; a release without a validation split gets one made
    from train: ``val_fraction`` of each class, drawn with ``seed`` (and a note saying so).
    Raises :class:`FormatError` (one line naming the file and what was expected), also when
    more than ``max_fail_fraction`` of a split's listed videos have no file."""
    reader = reader_of(name)(root, split=split, path_prefix=path_prefix, lists=lists)
    if not Path(root).is_dir():
        raise FormatError(f"dataset root {root} does not exist or is not a folder")
    data = reader.read()
    data.format = reader.name
    if not data.splits.get("train"):
        raise FormatError(f"{data.files[0] if data.files else root}: no training video found "
                          f"under {reader.video_root()} ({data.listed.get('train', 0)} listed)")
    for split, names in data.missing.items():
        if len(names) > max_fail_fraction * data.listed.get(split, len(names)):
            raise FormatError(f"{data.missing_line(split)} (more than max_fail_fraction="
                              f"{max_fail_fraction})")
    if "val" not in data.splits:
        parts = split_by_class(data.splits["train"], seed, val_fraction, 0.0,
                               group=reader.group_of)
        data.splits["train"], data.splits["val"] = parts["train"], parts["val"]
        data.notes.append(f"{reader.title} has no validation split: made from train "
                          f"({val_fraction:.0%} of each class, seed {seed}; "
                          f"{len(parts['val'])} videos)")
    return data
