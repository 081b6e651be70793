"""attnas data: PyAV video decoding, datasets, clip samplers, tensor transforms, the
``VideoDataModule`` and the synthetic relational benchmark.

Imports nothing from ``supernet`` or ``derive``. The names below are loaded on first use
(PEP 562), so a light module of this package (``datamodules.atomic``, ``datamodules.paths``)
can be imported without Lightning, PyAV and OpenCV.
"""

from __future__ import annotations

import importlib
from typing import Any

#: the public names and the modules that define them
_HOMES = {
    "ClipCache": "cache",
    "BrokenVideoMonitor": "callbacks",
    "VideoDataModule": "datamodule",
    "BrokenVideoWarning": "datasets",
    "EpochSampler": "datasets",
    "TooManyBrokenVideosError": "datasets",
    "VideoClipDataset": "datasets",
    "VideoRecord": "datasets",
    "read_video_list": "datasets",
    "scan_class_folders": "datasets",
    "split_in_two": "datasets",
    "stratified_order": "datasets",
    "DecodeError": "decode",
    "VideoInfo": "decode",
    "VideoReader": "decode",
    "decode_all": "decode",
    "probe": "decode",
    "read_frames": "decode",
    "class_names": "synth",
    "ensure_synthetic": "synth",
}

__all__ = [
    "VideoDataModule", "BrokenVideoMonitor", "ClipCache", "VideoClipDataset", "VideoRecord",
    "BrokenVideoWarning", "TooManyBrokenVideosError", "read_video_list", "scan_class_folders",
    "split_in_two", "stratified_order", "EpochSampler", "DecodeError", "VideoInfo",
    "VideoReader", "decode_all", "probe", "read_frames", "ensure_synthetic", "class_names",
]


def __getattr__(name: str) -> Any:
    """Load a public name from its module on first use."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
