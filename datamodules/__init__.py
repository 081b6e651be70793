"""attnas data: PyAV video decoding, datasets, clip samplers, tensor transforms, the
``VideoDataModule`` and the synthetic relational benchmark.

Imports nothing from ``supernet`` or ``derive``.
"""

from .cache import ClipCache
from .callbacks import BrokenVideoMonitor
from .datamodule import VideoDataModule
from .datasets import (
    BrokenVideoWarning,
    EpochSampler,
    TooManyBrokenVideosError,
    VideoClipDataset,
    VideoRecord,
    read_video_list,
    scan_class_folders,
    split_in_two,
    stratified_order,
)
from .decode import DecodeError, VideoInfo, VideoReader, decode_all, probe, read_frames
from .synth import class_names, ensure_synthetic

__all__ = [
    "VideoDataModule", "BrokenVideoMonitor", "ClipCache", "VideoClipDataset", "VideoRecord",
    "BrokenVideoWarning", "TooManyBrokenVideosError", "read_video_list", "scan_class_folders",
    "split_in_two", "stratified_order", "EpochSampler", "DecodeError", "VideoInfo",
    "VideoReader", "decode_all", "probe", "read_frames", "ensure_synthetic", "class_names",
]
